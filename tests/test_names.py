"""The names clients see: valid names pass untouched, everything else becomes a valid, stable,
distinct name; allow/deny globs choose what is offered at all."""

import hashlib

import pytest

from gateway.names import VALID_NAME, expose_name, join_name, matches


def valid(name: str, max_length: int = 64) -> bool:
    return VALID_NAME.fullmatch(name) is not None and len(name) <= max_length


# --- expose_name: the common case changes nothing ------------------------------------------------

@pytest.mark.parametrize("prefix, name, expected", [
    ("github", "search_issues", "github__search_issues"),
    ("gh", "create-pull-request", "gh__create-pull-request"),
    ("", "get_current_time", "get_current_time"),  # prefix "" passes names through, no separator
    ("time", "", "time__"),  # an empty upstream name is allowed
])
def test_valid_names_are_unchanged(prefix, name, expected):
    assert expose_name(prefix, "__", name, 64) == expected


def test_custom_separator():
    assert expose_name("gh", "-", "search", 64) == "gh-search"
    assert join_name("gh", "-", "search") == "gh-search"
    assert join_name("", "-", "search") == "search"


def test_name_of_exactly_max_length_is_unchanged():
    name = "t" * (64 - len("srv__"))
    assert expose_name("srv", "__", name, 64) == "srv__" + name


# --- over-long names -----------------------------------------------------------------------------

LONG_A = "summarize_the_quarterly_financial_report_for_the_board_of_directors_alpha"
LONG_B = "summarize_the_quarterly_financial_report_for_the_board_of_directors_beta"


def test_long_name_is_shortened_to_exactly_max_length_and_valid():
    exposed = expose_name("finance", "__", LONG_A, 64)
    assert len(exposed) == 64
    assert valid(exposed)


def test_shortening_is_deterministic():
    assert expose_name("finance", "__", LONG_A, 64) == expose_name("finance", "__", LONG_A, 64)


def test_shortened_name_ends_in_hash_of_the_original():
    exposed = expose_name("finance", "__", LONG_A, 64)
    digest = hashlib.sha256(f"finance__{LONG_A}".encode()).hexdigest()[:8]
    assert exposed.endswith("_" + digest)


def test_long_names_with_common_start_stay_distinct():
    a = expose_name("finance", "__", LONG_A, 64)
    b = expose_name("finance", "__", LONG_B, 64)
    assert a != b
    assert a[:55] == b[:55]  # the readable part is the same; the hash tells them apart


def test_prefix_stays_visible_at_the_front():
    assert expose_name("finance", "__", LONG_A, 64).startswith("finance__summarize")


@pytest.mark.parametrize("max_length", [16, 32, 40, 128])
def test_other_limits_are_respected(max_length):
    exposed = expose_name("finance", "__", LONG_A * 2, max_length)
    assert len(exposed) == max_length
    assert valid(exposed, max_length)


def test_limit_too_small_for_the_hash_is_refused():
    with pytest.raises(ValueError):
        expose_name("p", "__", "x" * 20, 8)


# --- invalid characters --------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["a.b", "a@b", "a/b", "a b", "a:b", "café", "工具", "a\u200bb", "\ud800x"])
def test_invalid_characters_become_a_valid_name(name):
    exposed = expose_name("srv", "__", name, 64)
    assert valid(exposed)
    assert exposed.startswith("srv__")


def test_sanitized_name_does_not_collide_with_an_existing_valid_name():
    existing = expose_name("srv", "__", "a_b", 64)
    assert existing == "srv__a_b"
    others = {expose_name("srv", "__", n, 64) for n in ["a.b", "a@b", "a/b", "a b", "a-b"]}
    assert existing not in others
    assert len(others) == 5


def test_sanitized_name_keeps_its_shape():
    assert expose_name("srv", "__", "files.read", 64).startswith("srv__files_read_")


def test_unprefixed_invalid_name_is_made_valid_too():
    exposed = expose_name("", "__", "files.read", 64)
    assert valid(exposed)
    assert exposed.startswith("files_read_")


def test_empty_name_without_prefix_still_gets_a_valid_name():
    assert valid(expose_name("", "__", "", 64))


# --- allow / deny --------------------------------------------------------------------------------

def test_no_allow_list_means_everything():
    assert matches("anything", None, ())


def test_allow_globs():
    assert matches("search_issues", ("search_*", "get_*"), ())
    assert not matches("delete_repo", ("search_*", "get_*"), ())


def test_empty_allow_list_means_nothing():
    assert not matches("search", (), ())


def test_deny_wins_over_allow():
    assert not matches("search_admin", ("search_*",), ("*_admin",))
    assert not matches("delete_repo", None, ("delete_*",))


def test_globs_are_case_sensitive():
    assert matches("Delete_repo", None, ("delete_*",))  # not denied: a different name
    assert not matches("delete_repo", ("Delete_*",), ())


def test_globs_on_uris():
    assert not matches("search://admin/users", None, ("search://admin/*",))
    assert matches("search://public/x", None, ("search://admin/*",))

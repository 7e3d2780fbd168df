"""docs/protocol.md covers the whole protocol and names only tests that exist.

Every request and notification the SDK knows (both directions, both eras) must have a row, so a
new SDK release with a new method fails here until the page says how it crosses; every test a row
names must exist, so the page cannot claim coverage that is not there.
"""

from __future__ import annotations

import re
from pathlib import Path

from mcp_types import methods

REPO = Path(__file__).resolve().parents[1]
PAGE = (REPO / "docs" / "protocol.md").read_text(encoding="utf-8")
ROWS = [line for line in PAGE.splitlines() if line.startswith("| `")]


def _methods(*tables: object) -> set[str]:
    return {key[0] if isinstance(key, tuple) else key for table in tables for key in table}  # type: ignore[attr-defined]


def test_every_method_and_notification_has_a_row() -> None:
    documented = {name for row in ROWS for name in re.findall(r"`([A-Za-z/_]+)`", row.split("|")[1])}
    known = _methods(methods.CLIENT_REQUESTS, methods.CLIENT_NOTIFICATIONS, methods.SERVER_REQUESTS,
                     methods.SERVER_NOTIFICATIONS)
    assert known - documented == set(), "methods docs/protocol.md does not say how they cross"


def test_every_test_the_page_names_exists() -> None:
    named = set(re.findall(r"`(test_[a-z0-9_]+)`", PAGE))
    defined = {match for path in (REPO / "tests").glob("test_*.py")
               for match in re.findall(r"^async def (test_[a-z0-9_]+)|^def (test_[a-z0-9_]+)",
                                       path.read_text(encoding="utf-8"), flags=re.MULTILINE)}
    defined_names = {a or b for a, b in defined}
    assert named, "the page names the tests that show each row"
    assert named - defined_names == set(), "docs/protocol.md names tests that do not exist"

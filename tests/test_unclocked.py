"""The SDK's request clock only for requests with a timeout (gateway/unclocked.py)."""

from __future__ import annotations

import inspect

import anyio
import mcp.shared.jsonrpc_dispatcher as sdk_dispatcher
import pytest
from mcp.shared import _request_clock as sdk_clock

from gateway import unclocked

pytestmark = pytest.mark.anyio


def test_the_dispatcher_clocks_each_request_it_sends_by_the_name_replaced() -> None:
    """If the SDK stops looking ``request_clock`` up in the dispatcher's module, or its clock stops
    living in ``_clock``, this fails rather than the replacement silently doing nothing."""
    assert 'with request_clock(opts.get("timeout")) as clock:' in inspect.getsource(
        sdk_dispatcher.JSONRPCDispatcher.send_raw_request)
    assert sdk_clock._clock.get() is None
    unclocked.install()
    assert sdk_dispatcher.request_clock is unclocked.request_clock


async def test_a_request_with_a_timeout_keeps_the_sdks_clock_and_times_out() -> None:
    with anyio.fail_after(10):
        with pytest.raises(TimeoutError):
            with unclocked.request_clock(0.05) as clock:
                assert sdk_clock._clock.get() is clock  # code below the request finds it, to pause it
                clock.start()
                await anyio.sleep_forever()


async def test_a_request_without_a_timeout_shows_no_clock_to_the_code_below_it() -> None:
    with unclocked.request_clock(30) as outer:
        outer.start()
        with unclocked.request_clock(None) as inner:
            inner.start()
            assert sdk_clock._clock.get() is None  # not the outer request's: it is not this one's to pause
            with sdk_clock.waiting_on_a_person():
                await anyio.sleep(0)
            inner.pause(), inner.resume()
        assert sdk_clock._clock.get() is outer

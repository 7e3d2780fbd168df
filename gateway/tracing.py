"""OpenTelemetry: the SDK's spans only when spans go somewhere.

The SDK opens a span for every message it handles and every request it sends, and injects the
trace context into each request's ``_meta``: about 7 us each, with nothing recorded until a tracer
provider is installed. The gateway installs none, but ``opentelemetry-instrument mcpgw serve``
would, and then every span is kept. The server side drops the SDK's span middleware at build time
(gateway/proxy.py); the client side has no such seam (the span is in the SDK's JSON-RPC
dispatcher), so ``install()`` gives the dispatcher functions that do nothing. Without a provider
the current span is never valid, so the context the SDK would inject is empty anyway.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import mcp.shared.jsonrpc_dispatcher as dispatcher
from mcp.shared._otel import inject_trace_context, otel_span
from opentelemetry import trace


def tracing() -> bool:
    """Whether an OpenTelemetry tracer provider is installed (spans would be recorded)."""
    provider = trace.get_tracer_provider()
    return not isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


def _no_span(name: str, **kwargs: Any) -> AbstractContextManager[Any]:
    return nullcontext(trace.INVALID_SPAN)


def _no_injection(meta: dict[str, Any]) -> None:
    return None


def install() -> None:
    """The SDK's dispatcher opens its span and injects trace context per request only while
    tracing: decided when a server is built (as the server side's span middleware is; a provider
    comes with ``opentelemetry-instrument``, before that), not per request: asking the tracer
    provider reads the environment each time."""
    on = tracing()
    dispatcher.otel_span = otel_span if on else _no_span  # type: ignore[assignment]
    dispatcher.inject_trace_context = inject_trace_context if on else _no_injection

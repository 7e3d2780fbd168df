"""OpenTelemetry: the SDK's spans only when spans go somewhere.

The SDK opens a span for every message it handles and every request it sends, and injects the
trace context into each request's ``_meta``: about 7 us each, with nothing recorded until a tracer
provider is installed. The gateway installs none, but ``opentelemetry-instrument mcpgw serve``
would, and then every span is kept. The server side drops the SDK's span middleware at build time
(gateway/proxy.py); the client side has no such seam (the span is in the SDK's JSON-RPC
dispatcher), so ``install()`` gives the dispatcher a span function that asks first. Without a
provider the current span is never valid, so the context the SDK would inject is empty anyway.
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


def _span(name: str, **kwargs: Any) -> AbstractContextManager[Any]:
    return otel_span(name, **kwargs) if tracing() else nullcontext(trace.INVALID_SPAN)


def _inject(meta: dict[str, Any]) -> None:
    if tracing():
        inject_trace_context(meta)


def install() -> None:
    """The SDK's dispatcher opens its span per request only while tracing (idempotent)."""
    dispatcher.otel_span = _span  # type: ignore[assignment]
    dispatcher.inject_trace_context = _inject

"""Logging to stderr (stdout is the MCP channel in stdio mode), human-readable or JSON.

Records about one upstream carry ``extra={"server": name}``; both formats show it, so every line
about an upstream names it. Every line passes through the redactor last, so a secret value printed
by anyone (an upstream's stderr included) is masked.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from gateway.redact import REDACT

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        server = getattr(record, "server", None)
        where = f"[{server}] " if server else ""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        text = f"{stamp} {record.levelname.lower():7} {where}{record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return REDACT(text)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": record.created, "level": record.levelname.lower(), "logger": record.name,
                 "message": record.getMessage()}
        for key in ("server", "stream"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return REDACT(json.dumps(entry))


def configure_logging(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS.get(level, logging.INFO))
    for noisy in ("httpx", "httpx2", "uvicorn.access", "mcp"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))

"""Watching the config file the way it is really replaced.

Editors save by writing a temporary file and renaming it over the old one; Kubernetes swaps a
ConfigMap by re-pointing the ``..data`` symlink beside ``proxy.yaml``; git-sync swaps a whole
directory. Watching the file itself misses all three, so the parent directory is watched (and the
target's directory when the file is a symlink elsewhere) and events are filtered by name. A burst of
events is debounced into one; whether anything really changed is the reloader's question.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Awaitable, Callable

import watchfiles

log = logging.getLogger("mcpgw")

DEBOUNCE_MS = 200
STOP_CHECK_MS = 250  # how often the watcher thread checks for shutdown (watchfiles' default, 5 s, delays exit)


def relevant(changed: str, config: Path) -> bool:
    """Whether a change to the path ``changed`` can change the file ``config`` reads."""
    name = Path(changed).name
    return name in (config.name, config.resolve().name) or name.startswith("..")  # ..data: a ConfigMap swap


async def watch_config(config: Path, on_change: Callable[[str], Awaitable[object]]) -> None:
    """Call ``on_change`` after each (debounced) burst of changes that may affect ``config``."""
    directories = sorted({str(config.absolute().parent), str(config.resolve().parent)})
    log.info("watching %s for changes", ", ".join(directories))
    async for changes in watchfiles.awatch(*directories, debounce=DEBOUNCE_MS, recursive=False,
                                           rust_timeout=STOP_CHECK_MS):
        if any(relevant(path, config) for _, path in changes):
            await on_change("the file changed")

"""Source locations: which file and line made each node, recorded only while switched on.

This is the engine's one process-wide switch. (Whether a new node must join a `Graph` is read
from its inputs, not from a flag: see `opgraph.core.value`.)
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

SourceLocation = tuple[str, int]

tracking = False
"""Whether new nodes record their source location now (read on every node made; set it with
`set_source_tracking` or `track_source`)."""

_lock = threading.Lock()
# Frames in the opgraph package are the engine's own; a location is the first frame outside it.
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def caller_location() -> SourceLocation | None:
    """File and line of the innermost frame outside the opgraph package."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith(_PACKAGE_DIR):
            if not os.path.isabs(filename) and not filename.startswith("<"):
                filename = os.path.abspath(filename)  # editors match sources by full path
            return (filename, frame.f_lineno)
        frame = frame.f_back
    return None


def set_source_tracking(enabled: bool) -> bool:
    """Switch source-location recording on or off for the whole process; returns the old state."""
    global tracking
    with _lock:
        previous, tracking = tracking, bool(enabled)
    return previous


@contextmanager
def track_source(enabled: bool = True) -> Iterator[None]:
    """Record the file and line that created each node while inside this block.

    Off by default because walking the stack costs about a microsecond per node; the Neovim
    client and ``Client.publish`` use these locations to put values beside the code.
    """
    previous = set_source_tracking(enabled)
    try:
        yield
    finally:
        set_source_tracking(previous)

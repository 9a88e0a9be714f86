"""When opgraph pauses Python's cyclic garbage collector: the one policy, with one pause counter.

Building or differentiating a big graph makes many objects and no reference cycles, and the
collector would run full collections over the whole graph again and again. So:

- `gc_paused()` pauses it for a block (``with opgraph.gc_paused(): ...``);
- a backward pass whose walk goes `DEEP` nodes deep pauses it for the rest of the pass (its
  stack is what would set off the collections; a shallow pass makes too few objects to matter,
  and pays nothing).

Both take a pause from the same counter, so pauses nest and overlap across threads (a server's
event loop and its workers): the collector runs again when the last one ends, and only if it
ran when the first one began. (Freezing long-lived objects out of the collector's reach is the
server's business, not this module's.)
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

DEEP = 1000
"""How deep (in nodes on its stack) a backward pass's walk goes before it pauses the collector."""

_lock = threading.Lock()
_pauses = 0  # pauses in force now, in every thread
_resume = False  # whether the collector ran when the first of them began


def pause() -> None:
    """Take a pause: the collector stops (if it ran) until every pause taken is released."""
    global _pauses, _resume
    with _lock:
        if not _pauses:
            _resume = gc.isenabled()
            gc.disable()
        _pauses += 1


def release() -> None:
    """Release a pause taken with `pause`; the last one restarts the collector if it ran."""
    global _pauses
    with _lock:
        if _pauses <= 0:
            raise RuntimeError("gcpolicy.release() without a pause to release")
        _pauses -= 1
        if not _pauses and _resume:
            gc.enable()


def pauses() -> int:
    """How many pauses are in force now (in every thread)."""
    return _pauses


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector inside the block (if it was running).

    Pauses nest and overlap across threads; the collector runs again when the last one ends.
    """
    pause()
    try:
        yield
    finally:
        release()

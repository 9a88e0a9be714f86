"""Compatibility only: the engine is the package `opgraph.core` now.

`opgraph_server` still imports ``opgraph.engine`` (``gc_paused``, ``Value``,
``topological_order``); new code imports from `opgraph.core` and `opgraph.gcpolicy`. This module
goes once the server is ported.
"""

from opgraph.core import *  # noqa: F403
from opgraph.core import __all__ as _core_names
from opgraph.gcpolicy import gc_paused

__all__ = [*_core_names, "gc_paused"]

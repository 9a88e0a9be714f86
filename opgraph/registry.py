"""The op table: built once from the plugin manager, then read on every applied op.

`make_plugin_manager()` is the factory (specs added, entry points loaded, each failure isolated
and reported by plugin name); `Registry` turns the plugins' hook results into a name -> OpDef
table. `default_registry()` builds the process-wide one on first use, never at import time.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import pluggy

from opgraph import hookspecs
from opgraph.core import optable
from opgraph.errors import (
    OpDefError,
    OpgraphPluginWarning,
    PluginConflictError,
    UnknownOpError,
)
from opgraph.opdef import OpDef


@dataclass(frozen=True)
class PluginProblem:
    """A plugin that failed to load, or delivered something unusable."""

    plugin: str
    message: str

    def __str__(self) -> str:
        return f"plugin {self.plugin!r}: {self.message}"


def make_plugin_manager(
    plugins: Iterable[tuple[str, object]] = (),
    *,
    entry_points: bool = True,
) -> tuple[pluggy.PluginManager, list[PluginProblem]]:
    """Build a plugin manager with opgraph's hook specs and the given plugins.

    ``plugins`` are extra ``(name, plugin)`` pairs registered directly (tests, embedding);
    with ``entry_points`` every plugin in the entry-point group ``opgraph`` is loaded. A plugin
    that fails to import is skipped and returned as a :class:`PluginProblem`.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    problems: list[PluginProblem] = []
    candidates: list[tuple[str, object]] = list(plugins)
    if entry_points:
        for ep in sorted(
            importlib.metadata.entry_points(group=hookspecs.ENTRY_POINT_GROUP),
            key=lambda ep: ep.name,
        ):
            try:
                candidates.append((ep.name, ep.load()))
            except Exception as exc:  # a broken plugin must not take the others down
                problems.append(
                    PluginProblem(ep.name, f"failed to import {ep.value!r}: {_describe(exc)}")
                )
    for name, plugin in candidates:
        if pm.is_registered(plugin):
            continue  # the same module listed twice (e.g. an editable and a regular install)
        if pm.get_plugin(name) is not None:
            problems.append(PluginProblem(
                name, f"another plugin is already registered under this name; "
                      f"{getattr(plugin, '__name__', plugin)!r} was left out"))
            continue
        try:
            pm.register(plugin, name=name)
        except Exception as exc:
            problems.append(PluginProblem(name, f"failed to register: {_describe(exc)}"))
    return pm, problems


class Registry:
    """The op table: every installed op by name, with the plugin that delivered it."""

    def __init__(self, pm: pluggy.PluginManager, problems: Iterable[PluginProblem] = ()):
        self.plugin_manager = pm
        self.problems: list[PluginProblem] = list(problems)
        self._ops: dict[str, OpDef] = {}
        for impl in pm.hook.opgraph_register_ops.get_hookimpls():
            self._add_from(impl.plugin_name, impl.function)
        for problem in self.problems:
            warnings.warn(str(problem), OpgraphPluginWarning, stacklevel=3)

    def _add_from(self, plugin: str, hook: Callable[..., Any]) -> None:
        delivered, problem = call_hook(plugin, "opgraph_register_ops", hook, OpDef)
        if problem is not None:  # the plugin's ops are left out together
            self.problems.append(PluginProblem(plugin, f"{problem.message}; its ops were left out"))
            return
        accepted: list[OpDef] = []
        for item in delivered:
            try:
                accepted.append(dataclasses.replace(item, plugin=plugin))
            except OpDefError as exc:
                self.problems.append(PluginProblem(plugin, str(exc)))
                return
        for op in accepted:
            if op.name in self._ops:
                raise PluginConflictError(op.name, self._ops[op.name].plugin, plugin)
            self._ops[op.name] = op

    def __getitem__(self, name: str) -> OpDef:
        try:
            return self._ops[name]
        except (KeyError, TypeError):
            raise UnknownOpError(name, self._ops) from None

    @property
    def ops(self) -> Mapping[str, OpDef]:
        """Every op by name (read-only)."""
        return MappingProxyType(self._ops)

    def get(self, name: str) -> OpDef | None:
        """The op named ``name``, or None."""
        return self._ops.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._ops

    def __iter__(self) -> Iterator[OpDef]:
        return iter(sorted(self._ops.values(), key=lambda op: op.name))

    def __len__(self) -> int:
        return len(self._ops)

    def names(self) -> list[str]:
        """Every op name, sorted."""
        return sorted(self._ops)

    def diagnostics_hooks(self) -> list[tuple[str, object]]:
        """``(plugin name, hook function)`` for every ``opgraph_diagnostics`` implementation."""
        return [
            (impl.plugin_name, impl.function)
            for impl in self.plugin_manager.hook.opgraph_diagnostics.get_hookimpls()
        ]


def build_registry(
    plugins: Iterable[tuple[str, object]] = (), *, entry_points: bool = True
) -> Registry:
    """A fresh registry from installed entry points and/or the given ``(name, plugin)`` pairs."""
    pm, problems = make_plugin_manager(plugins, entry_points=entry_points)
    return Registry(pm, problems)


_default: Registry | None = None


def default_registry() -> Registry:
    """The process-wide registry, built from installed plugins on first use."""
    global _default
    if _default is None:
        _default = build_registry()
    return _default


def set_default_registry(registry: Registry | None) -> Registry | None:
    """Replace the process-wide registry (None: rebuild on next use); returns the old one.

    The engine's op table follows: the new registry's ops now, or the rebuilt one's on first use.
    """
    global _default
    old, _default = _default, registry
    optable.install(_default_ops if registry is None else registry.ops)
    return old


def _default_ops() -> Mapping[str, OpDef]:
    return default_registry().ops


optable.install(_default_ops)  # the engine's table: the default registry's, built on first use


def call_hook(plugin: str, hook_name: str, hook: Callable[..., Any], kind: type,
              **kwargs: Any) -> tuple[list[Any], PluginProblem | None]:
    """Call one plugin's implementation of a hook on its own, so that a failure is pinned to
    its plugin, and check what it returned: the items of type ``kind`` before the first that is
    not one, and the problem (a raise, or an item of another type), if any."""
    try:
        delivered = list(hook(**kwargs) or ())
    except Exception as exc:
        return [], PluginProblem(plugin, f"{hook_name} failed: {_describe(exc)}")
    for i, item in enumerate(delivered):
        if not isinstance(item, kind):
            article = "an" if kind.__name__[0] in "AEIOU" else "a"
            text = repr(item) if len(repr(item)) <= 60 else repr(item)[:57] + "..."
            return delivered[:i], PluginProblem(
                plugin, f"{hook_name} returned {type(item).__name__}, not {article} "
                        f"{kind.__name__}: {text}")
    return delivered, None


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"

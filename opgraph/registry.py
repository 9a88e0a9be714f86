"""The op table: built once from the plugin manager, then read on every applied op.

`make_plugin_manager()` is the factory (specs added, entry points loaded, each failure isolated
and reported by plugin name); `Registry` turns the plugins' hook results into a name -> OpDef
table. `default_registry()` builds the process-wide one on first use, never at import time.

Two plugins defining one op name is a `PluginClash`: the op is left out (neither definition is
used: which one was meant cannot be known), every other op works, and the problem names both
plugins with the distributions (and versions) they come from and says what to uninstall. Using
the op raises `UnknownOpError` with that message; ``build_registry(raise_on_clash=True)`` raises
`PluginConflictError` instead.
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


@dataclass(frozen=True)
class PluginClash(PluginProblem):
    """An op name that two (or more) plugins define; the op is left out of the table.

    ``definitions`` are the op's definitions in load order; ``sources`` say where each comes
    from (``"'sp_one' (from sp-one 0.1)"``). ``plugin`` is the last plugin that defined it.
    """

    op: str = ""
    definitions: tuple[OpDef, ...] = ()
    sources: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.message


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
    """The op table: every installed op by name, with the plugin that delivered it.

    ``problems`` lists what went wrong (plugins that failed to load, malformed definitions,
    clashes); ``clashes`` maps each op name two plugins define to its `PluginClash`.
    """

    def __init__(self, pm: pluggy.PluginManager, problems: Iterable[PluginProblem] = (), *,
                 raise_on_clash: bool = False):
        self.plugin_manager = pm
        self.problems: list[PluginProblem] = list(problems)
        self._ops: dict[str, OpDef] = {}
        self.clashes: dict[str, PluginClash] = {}
        defined: dict[str, list[OpDef]] = {}
        for impl in pm.hook.opgraph_register_ops.get_hookimpls():
            for op in self._add_from(impl.plugin_name, impl.function):
                defined.setdefault(op.name, []).append(op)
        for name, ops in defined.items():
            if len(ops) == 1:
                self._ops[name] = ops[0]
                continue
            clash = _clash(pm, name, ops, left_out=not raise_on_clash)
            if raise_on_clash:
                raise PluginConflictError(name, ops[0].plugin, ops[1].plugin,
                                          message=clash.message)
            self.clashes[name] = clash
            self.problems.append(clash)
        for problem in self.problems:
            warnings.warn(str(problem), OpgraphPluginWarning, stacklevel=3)

    def _add_from(self, plugin: str, hook: Callable[..., Any]) -> list[OpDef]:
        """The op definitions ``plugin`` delivers (none if any of them is unusable)."""
        delivered, problem = call_hook(plugin, "opgraph_register_ops", hook, OpDef)
        if problem is not None:  # the plugin's ops are left out together
            self.problems.append(PluginProblem(plugin, f"{problem.message}; its ops were left out"))
            return []
        accepted: list[OpDef] = []
        for item in delivered:
            try:
                accepted.append(dataclasses.replace(item, plugin=plugin))
            except OpDefError as exc:
                self.problems.append(PluginProblem(plugin, str(exc)))
                return []
        return accepted

    def __getitem__(self, name: str) -> OpDef:
        try:
            return self._ops[name]
        except (KeyError, TypeError):
            raise self.missing(name) from None

    def missing(self, name: str) -> UnknownOpError:
        """The error for an op name the table does not hold: unknown (with suggestions), or
        left out because two plugins define it (with the clash's message)."""
        clash = self.clashes.get(name) if isinstance(name, str) else None
        return UnknownOpError(name, [*self._ops, *self.clashes],
                              reason=clash.message if clash else None)

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
    plugins: Iterable[tuple[str, object]] = (), *, entry_points: bool = True,
    raise_on_clash: bool = False,
) -> Registry:
    """A fresh registry from installed entry points and/or the given ``(name, plugin)`` pairs.

    An op two plugins define is left out and reported (see `PluginClash`), or with
    ``raise_on_clash`` raises `PluginConflictError`.
    """
    pm, problems = make_plugin_manager(plugins, entry_points=entry_points)
    return Registry(pm, problems, raise_on_clash=raise_on_clash)


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
    if registry is None:
        optable.install(_default_ops, _default_missing)
    else:
        optable.install(registry.ops, registry.missing)
    return old


def _default_ops() -> Mapping[str, OpDef]:
    return default_registry().ops


def _default_missing(name: str) -> UnknownOpError:
    return default_registry().missing(name)


# the engine's table: the default registry's, built on first use
optable.install(_default_ops, _default_missing)


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


_OWN_DISTRIBUTION = "opgraph"


def _distribution(pm: pluggy.PluginManager, plugin: str) -> tuple[str, str] | None:
    """``(name, version)`` of the installed distribution whose entry point gave ``plugin``, or
    None for a plugin registered directly."""
    obj = pm.get_plugin(plugin)
    module = getattr(obj, "__name__", None) or getattr(obj, "__module__", None)
    found = [ep for ep in importlib.metadata.entry_points(group=hookspecs.ENTRY_POINT_GROUP,
                                                          name=plugin)
             if getattr(ep, "dist", None) is not None]
    matching = [ep for ep in found if ep.module == module] or (found if len(found) == 1
                                                                else [])
    if not matching:
        return None
    dist = matching[0].dist
    return dist.metadata["Name"] or dist.name, dist.version


def _clash(pm: pluggy.PluginManager, name: str, ops: list[OpDef],
           left_out: bool = True) -> PluginClash:
    """The problem of op ``name`` defined by every op of ``ops`` (two or more plugins)."""
    sources: list[str] = []
    removable: list[str] = []  # third-party distributions to uninstall, in load order
    built_in = direct = 0
    for op in ops:
        dist = _distribution(pm, op.plugin)
        if dist is None:
            direct += 1
            sources.append(f"{op.plugin!r} (registered directly, not installed)")
        elif dist[0].lower() == _OWN_DISTRIBUTION:
            built_in += 1
            sources.append(f"{op.plugin!r} (built into {dist[0]} {dist[1]})")
        else:
            sources.append(f"{op.plugin!r} (from {dist[0]} {dist[1]})")
            if dist[0] not in removable:
                removable.append(dist[0])
    if len(removable) >= 2:
        fix = ("uninstall the one you do not want ("
               + ", or ".join(f"pip uninstall {d}" for d in removable)
               + "), or rename the op in one of them")
    elif removable and not built_in and not direct:
        fix = f"rename one of the ops in {removable[0]}, which defines it more than once"
    elif removable:
        also = f", which {_OWN_DISTRIBUTION} itself defines" if built_in else ""
        fix = f"uninstall {removable[0]} (pip uninstall {removable[0]}), or rename its op{also}"
    else:
        fix = "register only one of them, or rename the op in one"
    count = {2: "two", 3: "three"}.get(len(ops), str(len(ops)))
    listed = ", ".join(sources[:-1]) + f" and {sources[-1]}"
    outcome = ", so it is left out" if left_out else ""
    message = f"op {name!r} is defined by {count} plugins: {listed}{outcome}; to fix it, {fix}"
    return PluginClash(plugin=ops[-1].plugin, message=message, op=name,
                       definitions=tuple(ops), sources=tuple(sources))

"""Registry of pooling operators: built-ins, entry-point plugins and explicit plugin files.

Spec strings are parsed and written by ``specs``; this module registers and looks up.
A pooling operator is a factory ``(channels, **options) -> nn.Module`` registered with
``@register_pool(name, **metadata)``. Everywhere a pool is named (CLI and API) a spec string
``name:key=value,key=value`` is accepted.
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import fnmatch
import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from torch import nn

from .errors import PluginError, PoolOptionError, UnknownPoolError, UsageError, one_line
from .specs import format_spec, format_value, normalize_name, parse_spec
from .version import __version__

ENTRY_POINT_GROUP = "poolbench.pools"
BUILTIN_SOURCE = "built-in"
# every built-in is written from its paper for poolbench, so it carries poolbench's licence
BUILTIN_LICENCE = "MIT"


@dataclass(frozen=True)
class Paper:
    authors: str
    title: str
    venue: str
    year: int
    url: str = ""

    def short(self) -> str:
        first = self.authors.split(",")[0].split(" and ")[0].strip()
        etal = " et al." if ("," in self.authors or " and " in self.authors) else ""
        return f"{first}{etal}, {self.venue} {self.year}"


@dataclass(frozen=True)
class PoolSpec:
    """A registered pooling operator and what is known about it.

    Counts of parameters and FLOPs are never declared here: they are measured.
    """

    name: str
    factory: Callable[..., nn.Module] = field(repr=False, compare=False)
    display_name: str = ""
    paper: Paper | None = None
    stochastic: bool = False          # random in training mode
    invertible: bool = False          # has an up-pooling partner: down(x) -> (y, state), up(y, state)
    shape_policy: str = "floor"       # output H//2 x W//2, like nn.MaxPool2d(2, 2)
    constant_gain: float | None = None  # a constant map c becomes gain * c (None: no such property)
    convex: bool = False              # output within the window's min and max
    notes: str = ""
    licence: str = ""                 # licence of this implementation (built-ins: poolbench's)
    source: str = BUILTIN_SOURCE      # "built-in", a distribution name, or "file:PATH" / "module:NAME"
    version: str = ""

    @property
    def options(self) -> dict[str, Any]:
        """Accepted options and their defaults, read from the factory's signature."""
        return factory_options(self.factory)

    @property
    def year(self) -> int | None:
        return self.paper.year if self.paper else None


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be loaded; shown by `poolbench pools`, never fatal."""

    name: str
    source: str
    version: str
    error: str


_REGISTRY: dict[str, PoolSpec] = {}
_FAILURES: list[PluginFailure] = []
_LOCK = threading.RLock()
_state = {"entry_points": False, "env_plugins": False}
_loaded_plugins: set[str] = set()
_current_source: list[tuple[str, str]] = []  # stack of (source, version) while a plugin imports


def _poolbench_version() -> str:

    return __version__


def factory_options(factory: Callable) -> dict[str, Any]:
    sig = inspect.signature(factory)
    params = list(sig.parameters.values())[1:]  # the first is `channels`
    return {
        p.name: (None if p.default is inspect.Parameter.empty else p.default)
        for p in params
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def _accepts_channels(factory: Callable) -> bool:
    try:
        params = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):
        return False
    return bool(params) and params[0].kind in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    )


def _add(spec: PoolSpec, override: bool) -> PoolSpec:
    key = normalize_name(spec.name)
    with _LOCK:
        old = _REGISTRY.get(key)
        if old is not None and not override:
            raise UsageError(
                f"pool {spec.name!r} is already registered (from {old.source}); "
                "choose another name or pass override=True"
            )
        _REGISTRY[key] = spec
    return spec


def register_pool(name: str, *, override: bool = False, **metadata: Any):
    """Decorator registering ``factory(channels, **options) -> nn.Module`` under ``name``.

    ``metadata`` are PoolSpec fields (display_name, paper, stochastic, invertible,
    shape_policy, constant_gain, convex, notes, licence). ``paper`` may be a Paper or a dict;
    a built-in's licence defaults to poolbench's own (``BUILTIN_LICENCE``).
    """
    bad = set(metadata) - {f.name for f in dataclasses.fields(PoolSpec)} - {"factory", "name"}
    if bad:
        raise TypeError(f"register_pool got unknown metadata {sorted(bad)}")
    if isinstance(metadata.get("paper"), dict):
        metadata["paper"] = Paper(**metadata["paper"])

    def decorator(factory: Callable[..., nn.Module]):
        if not _accepts_channels(factory):
            raise TypeError(f"pool factory for {name!r} must take `channels` as its first argument")
        source, version = (
            _current_source[-1] if _current_source else (BUILTIN_SOURCE, _poolbench_version())
        )
        fields = {"source": source, "version": version, "display_name": name,
                  **({"licence": BUILTIN_LICENCE} if source == BUILTIN_SOURCE else {}), **metadata}
        _add(PoolSpec(name=normalize_name(name), factory=factory, **fields), override)
        return factory

    return decorator


def register_spec(spec: PoolSpec, *, override: bool = False) -> PoolSpec:
    """Register an already-built PoolSpec (what an entry point may point at)."""
    if not isinstance(spec, PoolSpec):
        raise TypeError(f"expected a PoolSpec, got {type(spec).__name__}")
    return _add(dataclasses.replace(spec, name=normalize_name(spec.name)), override)


def unregister_pool(name: str) -> None:
    with _LOCK:
        _REGISTRY.pop(normalize_name(name), None)


@contextlib.contextmanager
def _plugin_source(source: str, version: str):
    _current_source.append((source, version))
    try:
        yield
    finally:
        _current_source.pop()


# --- discovery ---------------------------------------------------------------------------

def _ensure_loaded() -> None:
    with _LOCK:
        if not _state["entry_points"]:
            _state["entry_points"] = True
            if os.environ.get("POOLBENCH_DISABLE_PLUGINS", "").strip() not in ("1", "true", "yes"):
                _load_entry_points()
        if not _state["env_plugins"]:
            _state["env_plugins"] = True
            for item in filter(None, os.environ.get("POOLBENCH_PLUGINS", "").split(os.pathsep)):
                load_plugin(item)


def _record_failure(name: str, source: str, version: str, exc: BaseException) -> None:
    msg = one_line(exc, with_type=True)
    _FAILURES.append(PluginFailure(name=name, source=source, version=version, error=msg))
    # once per plugin and process: its pools are missing, and "unknown pool" alone misleads
    print(f"poolbench: warning: plugin {name} ({source}) failed to load: {msg}; "
          "its pools are unavailable (`poolbench pools` lists the failures)", file=sys.stderr)


def _load_entry_points() -> None:
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        source = dist.metadata["Name"] if dist is not None else ep.value
        version = dist.version if dist is not None else ""
        snapshot = dict(_REGISTRY)
        try:
            with _plugin_source(source, version):
                obj = ep.load()
                if isinstance(obj, PoolSpec):
                    register_spec(dataclasses.replace(obj, source=source, version=version))
        except Exception as exc:  # a broken plugin must not break the others
            _REGISTRY.clear()
            _REGISTRY.update(snapshot)
            _record_failure(ep.name, source, version, exc)


def load_plugin(path_or_module: str) -> None:
    """Import a plugin `.py` file or module, which registers operators as it imports.

    A path that does not exist is a usage error; a plugin that raises while importing (or
    clashes with a registered name) is recorded as broken and everything else keeps working.
    """
    item = str(path_or_module).strip()
    looks_like_file = item.endswith(".py") or os.sep in item or "/" in item
    key = str(Path(item).resolve()) if looks_like_file else item
    with _LOCK:
        if key in _loaded_plugins:
            return
        if looks_like_file:
            path = Path(item)
            if path.is_dir():
                files = sorted(p.name for p in path.glob("*.py"))[:3]
                project = any((path / f).is_file() for f in ("pyproject.toml", "setup.py"))
                raise PluginError(
                    f"plugin {item!r} is a folder, not a .py file; "
                    + (f"install the project (pip install -e {item}) and pass its module name" if project
                       else "pass one of its .py files" + (f" ({', '.join(files)})" if files else "")
                       + " or the name of an installed module"))
            if not path.is_file():
                raise PluginError(
                    f"plugin file {item!r} not found; pass an existing .py file or an importable module name"
                )
            source, version = f"file:{path}", ""
        else:
            if importlib.util.find_spec(item.split(".")[0]) is None:
                raise PluginError(
                    f"plugin module {item!r} cannot be imported; install it or pass a path to a .py file"
                )
            source, version = f"module:{item}", _module_version(item)
        _loaded_plugins.add(key)
        snapshot = dict(_REGISTRY)
        try:
            with _plugin_source(source, version):
                if looks_like_file:
                    mod_name = f"poolbench_plugin_{Path(item).stem}_{abs(hash(key)) % 10**8}"
                    spec = importlib.util.spec_from_file_location(mod_name, path)
                    module = importlib.util.module_from_spec(spec)
                    sys.modules[mod_name] = module
                    spec.loader.exec_module(module)
                else:
                    importlib.import_module(item)
        except Exception as exc:
            _REGISTRY.clear()
            _REGISTRY.update(snapshot)
            _record_failure(Path(item).stem if looks_like_file else item, source, version, exc)


def _module_version(module: str) -> str:
    top = module.split(".")[0]
    dists = importlib.metadata.packages_distributions().get(top, [])
    if dists:
        try:
            return importlib.metadata.version(dists[0])
        except importlib.metadata.PackageNotFoundError:
            return ""
    return ""


def plugin_failures() -> list[PluginFailure]:
    _ensure_loaded()
    return list(_FAILURES)


# --- lookup --------------------------------------------------------------------------------

def loaded_plugins() -> frozenset[str]:
    """The plugin files and modules loaded in this process (to load again in worker processes)."""
    return frozenset(_loaded_plugins)


def canonical_spec(spec: str) -> str:
    """The one canonical form of a pool spec (options sorted); an unknown pool name fails here."""
    name, options = parse_spec(spec)
    get_spec(name)
    return format_spec(name, options)


def get_spec(name: str) -> PoolSpec:
    """The PoolSpec registered under ``name`` (a bare name or a spec string)."""
    _ensure_loaded()
    key, _ = parse_spec(name)
    spec = _REGISTRY.get(key)
    if spec is None:
        close = difflib.get_close_matches(key, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        failed = "".join(f"; plugin {f.name} ({f.source}) failed to load: {f.error}" for f in _FAILURES)
        raise UnknownPoolError(
            f"unknown pool {key!r}{hint}{failed} (`poolbench pools` lists the {len(_REGISTRY)} registered)"
        )
    return spec


def _check_options(spec: PoolSpec, options: dict[str, Any]) -> dict[str, Any]:
    accepted = spec.options
    listing = ", ".join(f"{k}={format_value(v)}" for k, v in accepted.items()) or "none"
    checked = {}
    for key, value in options.items():
        if key not in accepted:
            raise PoolOptionError(
                f"pool {spec.name!r} has no option {key!r}; accepted options (defaults): {listing}"
            )
        default = accepted[key]
        if default is not None and value is not None and not callable(value):
            if isinstance(default, bool):
                ok = isinstance(value, bool)
            elif isinstance(default, int):
                ok = isinstance(value, int) and not isinstance(value, bool)
            elif isinstance(default, float):
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
                value = float(value) if ok else value
            elif isinstance(default, str):
                ok = isinstance(value, str)
            else:
                ok = True
            if not ok:
                raise PoolOptionError(
                    f"pool {spec.name!r} option {key}={format_value(value)!s} should be "
                    f"{type(default).__name__}; accepted options (defaults): {listing}"
                )
        checked[key] = value
    return checked


def get_pool(spec: str, channels: int, **options: Any) -> nn.Module:
    """Build the pooling operator named by ``spec`` for ``channels`` channels.

    Options in the spec string and keyword options are merged (keywords win).
    """
    name, spec_options = parse_spec(spec)
    pool_spec = get_spec(name)
    opts = _check_options(pool_spec, {**spec_options, **options})
    if not isinstance(channels, int) or channels < 1:
        raise UsageError(f"channels must be a positive integer, got {channels!r}")
    try:
        module = pool_spec.factory(channels, **opts)
    except UsageError as exc:
        msg = str(exc)
        raise type(exc)(msg if msg.startswith("pool ") else f"pool {name!r}: {msg}") from exc
    except (ValueError, TypeError) as exc:
        raise PoolOptionError(f"pool {format_spec(name, opts)!r}: {exc}") from exc
    if not isinstance(module, nn.Module):
        raise UsageError(
            f"pool {name!r} factory returned {type(module).__name__}, not an nn.Module; fix the plugin"
        )
    return module


def list_pools(pattern: str = "*") -> list[str]:
    """Names of registered pools matching a shell-style pattern, sorted."""
    _ensure_loaded()
    pat = normalize_name(pattern)
    return sorted(k for k in _REGISTRY if fnmatch.fnmatch(k, pat))


def check_choice(option: str, value: Any, choices) -> Any:
    """Raise a PoolOptionError naming the accepted values when ``value`` is not one of them."""
    if value not in choices:
        accepted = ", ".join(repr(c) for c in choices)
        raise PoolOptionError(f"option {option}={value!r} is not accepted; choose one of {accepted}")
    return value

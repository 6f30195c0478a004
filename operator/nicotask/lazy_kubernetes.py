"""Import kubernetes-asyncio's generated models and APIs when used, not all at once.

`kubernetes_asyncio/__init__.py`, `client/__init__.py`, `client/models/__init__.py`
and `client/api/__init__.py` import every one of the ~770 generated model and
~60 API modules eagerly: about 35 MB in every process, and kopf imports the
package as soon as it is installed (to recognise its V1ObjectMeta). nicotask
uses a handful of them (the rest of its traffic is raw JSON).

`install()` puts a lazy stand-in for those four packages in `sys.modules`
before anything imports them. Each stand-in has the package's real `__path__`
(so submodules import as usual) and resolves the names the real `__init__`
would have imported, read from that file's own `from ... import ...` lines,
on first attribute access. Nothing else changes: the same classes, from the
same modules. If the package is already imported, or its `__init__` does not
have that shape, nothing is installed.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import types
from typing import Any

PACKAGES = (
    "kubernetes_asyncio",
    "kubernetes_asyncio.client",
    "kubernetes_asyncio.client.models",
    "kubernetes_asyncio.client.api",
)
_FROM = re.compile(r"^from (kubernetes_asyncio[\w.]*) import (\w+)(?: as (\w+))?\s*$", re.M)
_IMPORT_AS = re.compile(r"^import (kubernetes_asyncio[\w.]*) as (\w+)\s*$", re.M)


def _exports(source: str) -> dict[str, tuple[str, str | None]]:
    """name -> (module, attribute or None for the module itself), as `__init__` binds them."""
    out: dict[str, tuple[str, str | None]] = {}
    for module, attr, alias in _FROM.findall(source):
        out[alias or attr] = (module, attr)
    for module, alias in _IMPORT_AS.findall(source):
        out[alias] = (module, None)
    return out


class _LazyPackage(types.ModuleType):
    def __init__(self, spec: Any, exports: dict[str, tuple[str, str | None]], source: str):
        super().__init__(spec.name)
        self.__file__ = spec.origin
        self.__path__ = list(spec.submodule_search_locations or [])
        self.__spec__ = spec
        self.__package__ = spec.name
        self.__all__ = list(exports)
        self._exports = exports
        # Module-level constants the real __init__ defines (e.g. __version__).
        for key, value in re.findall(r'^(__\w+__) = "([^"]*)"\s*$', source, re.M):
            setattr(self, key, value)

    def __getattr__(self, name: str) -> Any:
        found = self._exports.get(name)
        if found is None:
            # A submodule, as the real package has it bound once imported (`client.models`).
            if name.startswith("__") or importlib.util.find_spec(f"{self.__name__}.{name}") is None:
                raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
            found = (f"{self.__name__}.{name}", None)
        module, attr = found
        target = importlib.import_module(module)
        value = target if attr is None else getattr(target, attr)
        setattr(self, name, value)
        return value

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self._exports))


def install() -> bool:
    """Install the lazy packages; False (and nothing changed) when it cannot be done."""
    if any(name in sys.modules for name in PACKAGES):
        return False
    installed: list[str] = []
    for name in PACKAGES:
        try:
            spec = importlib.util.find_spec(name)  # a subpackage's parent: the lazy one
        except (ImportError, ValueError):
            spec = None
        source = ""
        if spec is not None and spec.origin and spec.submodule_search_locations:
            with open(spec.origin, encoding="utf-8") as f:
                source = f.read()
        exports = _exports(source)
        if spec is None or not exports:
            for done in installed:
                sys.modules.pop(done, None)
            return False
        sys.modules[name] = package = _LazyPackage(spec, exports, source)
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, package)  # as an import binds a subpackage
        installed.append(name)
    return True

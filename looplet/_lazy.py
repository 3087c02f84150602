"""Lazy public names: a package maps names to modules and imports a module on first use."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_getattr(
    package: str, namespace: dict[str, Any], names: dict[str, str], *, old_names: bool = False
) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``names[name]`` on first access and caches the value in
    ``namespace`` (the package's ``globals()``), so later lookups cost nothing. With ``old_names``,
    other names are looked up among looplet 0.4.1's (:func:`looplet.compat.old_name`)."""

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            if old_names and not name.startswith("__"):
                from looplet.compat import old_name  # deprecated aliases, or an error naming the new spelling

                return old_name(package, name)
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return __getattr__

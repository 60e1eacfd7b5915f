"""Finding what the modules of a package declare about themselves (data sets, model families)."""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Iterator, Mapping

from psx.errors import PsxError


def declarations(package: str, attribute: str) -> Iterator[tuple[str, Any]]:
    """(module name, its `attribute`) for every module of `package` that has one, in alphabetical order of
    the modules (pkgutil lists them so): the registries read their entries from these, so that adding a
    data set or a family is adding one module."""
    root = importlib.import_module(package)
    for info in pkgutil.iter_modules(root.__path__):
        module = importlib.import_module(f"{package}.{info.name}")
        if hasattr(module, attribute):
            yield info.name, getattr(module, attribute)


def declared_named(known: Mapping[str, Any], name: Any, what: str) -> Any:
    """known[name], or one line naming what is known instead (e.g. "unknown dataset 'x' (known: ...)")."""
    if name not in known:
        raise PsxError(f"unknown {what} {name!r} (known: {', '.join(known)})")
    return known[name]

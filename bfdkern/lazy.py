"""Public names of a package that load on first use (PEP 562).

A package ``__init__`` that imports its submodules eagerly makes every import of the package, even of
one light submodule (``bfdkern.models.choices`` for the command line's ``--backbone`` choices), pay for
torch. With :func:`lazy_exports` the ``__init__`` only names where each public name lives; the submodule
is imported when the name is first looked up.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable


def lazy_exports(
    package: str, exports: dict[str, tuple[str, ...]], aliases: dict[str, tuple[str, str]] | None = None
) -> tuple[Callable[[str], object], Callable[[], list[str]], list[str]]:
    """``(__getattr__, __dir__, __all__)`` for the package ``package`` (its ``__name__``).

    Args:
        exports: submodule, relative to the package (``"trainer"``, or ``""`` for nothing), -> the names it
            defines that the package exports.
        aliases: more public names -> (submodule, the name there), e.g. ``{"auc": ("metrics", "roc_auc")}``.

    A looked-up name is cached in the package's namespace, so later look-ups are plain attribute reads. An
    unknown name raises AttributeError, so ``from package import submodule`` still imports the submodule.
    """
    where = {name: (module, name) for module, names in exports.items() for name in names}
    where.update(aliases or {})
    sys.modules[package].__class__ = _LazyPackage
    sys.modules[package].__lazy_exports__ = where

    def __getattr__(name: str):
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, attribute = where[name]
        value = getattr(importlib.import_module(f"{package}.{module}" if module else package), attribute)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(where))

    return __getattr__, __dir__, sorted(where)


class _LazyPackage(types.ModuleType):
    """A package whose exported name may also be one of its submodules' names (``bfdkern.bilevel.hypergradient``
    is a function and a module). Importing the submodule binds it as the package's attribute; the exported
    name wins, as it did when the package imported its names eagerly."""

    def __setattr__(self, name: str, value) -> None:
        where = self.__dict__.get("__lazy_exports__", {})
        if (
            name in where
            and where[name][0] == name
            and isinstance(value, types.ModuleType)
            and value.__name__ == f"{self.__name__}.{name}"
        ):
            value = getattr(value, where[name][1])
        super().__setattr__(name, value)

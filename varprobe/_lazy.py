"""Names of a package loaded on first use (PEP 562), so importing the package stays cheap."""
from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any

__all__ = ["lazy_names"]


def lazy_names(package: str, names: dict[str, str], public: list[str]) -> tuple[Callable[[str], Any],
                                                                                Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` of ``package``: ``names`` maps a public name to the
    submodule (relative to ``package``) that defines it; a loaded name is kept in the package."""
    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        pkg = import_module(package)
        value = getattr(import_module(f"{package}.{names[name]}"), name)
        setattr(pkg, name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(import_module(package)), *public})

    return __getattr__, __dir__

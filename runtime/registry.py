"""Name -> backend registries (engines, transports, targets, operators, aggregators, H-DNN kinds, ...).

Backends register themselves by name from their own module; nothing dispatches on list positions.
A registry given its plugin package imports every module of it on first use, so adding a backend is
adding a file and no caller has to load the plugins first.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

from hgen.runtime.errors import RegistrationError, UnknownChoiceError

T = TypeVar("T")


class Registry(Generic[T]):
    """A typed mapping from names to backends, with an error that lists the valid choices.

    With `package`, the registry imports that plugin package's modules itself the first time it is asked for a
    backend or its names, so callers load no plugins themselves."""

    def __init__(self, kind: str, error: type[Exception] = UnknownChoiceError, package: str | None = None) -> None:
        self.kind = kind
        self.package = package  # where its plugins live (None: they register from wherever they are defined)
        self._error = error
        self._discovered = package is None
        self._items: dict[str, T] = {}

    def _entries(self) -> dict[str, T]:
        if not self._discovered and self.package is not None:
            _discover(self.package)  # a plugin that fails to import raises here, and the next use tries again
            self._discovered = True
        return self._items

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: `@registry.register("name")` on a class or function."""

        def add(item: T) -> T:
            self.add(name, item)
            return item

        return add

    def add(self, name: str, item: T) -> None:
        if name in self._items and self._items[name] is not item:
            raise RegistrationError(f"{self.kind} '{name}' is registered twice")
        self._items[name] = item

    def get(self, name: str) -> T:
        try:
            return self._entries()[name]
        except KeyError:
            raise self._error(
                f"unknown {self.kind} '{name}'; valid choices: {', '.join(self.names()) or '(none registered)'}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries())

    def validate(self, name: str, *, also: Sequence[str] = ()) -> str:
        """For a config field validator: `name` when registered (or one of the field's own `also` words, like
        `auto`), else a ValueError listing the choices, which pydantic reports under the field's key path."""
        if name not in self._entries() and name not in also:
            raise ValueError(f"unknown {self.kind} {name!r}; valid choices: {', '.join([*also, *self.names()])}")
        return name

    def check_choice(self, chosen: Sequence[str], *, allow_none: bool = False) -> None:
        """A selection of backends (a bundle's engines, its web runtimes): distinct known names, at least one unless
        `allow_none`; the error lists the valid choices."""
        unknown = [name for name in chosen if name not in self._entries()]
        if unknown or (not chosen and not allow_none) or len(set(chosen)) != len(chosen):
            raise self._error(f"{self.kind}s must be distinct names from {tuple(self.names())}, got {tuple(chosen)}")

    def __contains__(self, name: object) -> bool:
        return name in self._entries()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def items(self) -> list[tuple[str, T]]:
        return [(name, self._entries()[name]) for name in self.names()]


def _discover(package: str) -> None:
    """Import every submodule of `package` so their `@register` decorators run."""
    module = importlib.import_module(package)
    for info in pkgutil.iter_modules(module.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")

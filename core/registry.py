"""Decorator registries (models, datasets, methods) with listing and helpful lookup errors."""
from __future__ import annotations

import difflib
import fnmatch
from typing import Callable, Iterator


class RegistryError(KeyError):
    """An unknown name was looked up; the message lists the close matches and all choices."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


class Registry:
    """Maps names to factories. Use as ``@reg``, ``@reg()`` or ``@reg("name")``."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Callable] = {}
        self._prefixes: dict[str, Callable[[str], Callable]] = {}

    def register(self, fn_or_name: Callable | str | None = None, *, name: str | None = None):
        def add(fn: Callable, key: str | None) -> Callable:
            key = key or fn.__name__
            if key in self._entries and self._entries[key] is not fn:
                raise ValueError(f"{self.kind} '{key}' is registered twice")
            self._entries[key] = fn
            return fn

        if callable(fn_or_name):
            return add(fn_or_name, name)
        return lambda fn: add(fn, fn_or_name or name)

    __call__ = register

    def register_prefix(self, prefix: str, resolver: Callable[[str], Callable]) -> None:
        """Names ``<prefix><rest>`` resolve to ``resolver(rest)`` (e.g. ``timm:<arch>``)."""
        self._prefixes[prefix] = resolver

    def get(self, name: str) -> Callable:
        for prefix, resolver in self._prefixes.items():
            if name.startswith(prefix):
                return resolver(name[len(prefix):])
        if name not in self._entries:
            close = difflib.get_close_matches(name, self._entries, n=3)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            also = "".join(f", {p}<name>" for p in self._prefixes)
            raise RegistryError(
                f"unknown {self.kind} '{name}'.{hint} Available: {', '.join(sorted(self._entries))}{also}"
            )
        return self._entries[name]

    def list(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())

"""Compression methods, one module per paper, registered by name (``method=<name>``).

Importing this package imports every module in it (and in ``methods/common``), so a new method only
needs ``@register_method("name")`` on its class. ``list_methods()`` lists them.
"""
import importlib
import pkgutil

from core.registry import Registry

METHODS = Registry("method")
register_method = METHODS.register
list_methods = METHODS.list

from methods.base import Method, Stage, RunContext  # noqa: E402


def _import_all() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.name not in ("base",):
            importlib.import_module(f"{__name__}.{info.name}")


_import_all()


def build_method(method_cfg) -> Method:
    """The method object for a ``method`` config node (its ``name`` picks the class)."""
    return METHODS.get(method_cfg.name)(method_cfg)


def detection_methods() -> list[str]:
    """The registered methods that can train a detector (``Method.supports_detection``)."""
    return [name for name in list_methods() if METHODS.get(name).supports_detection]


__all__ = ["METHODS", "register_method", "list_methods", "build_method", "detection_methods", "Method", "Stage",
           "RunContext"]

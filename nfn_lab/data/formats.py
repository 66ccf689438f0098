"""The registry of zoo formats that ``nfn-lab zoo info`` and ``nfn-lab zoo convert`` know.

A format is a :class:`~nfn_lab.data.zoo.ZooDataModule` subclass with ``detect(root)`` and
``describe(root)``, registered under a short name. Three sources, later ones winning on a
name clash:

1. the built-in formats, :data:`BUILTIN_FORMATS` (one module each under ``datamodules/``);
2. entry points of installed packages in the group :data:`ENTRY_POINT_GROUP`, so another
   package registers its format without editing nfn-lab, e.g. in its ``pyproject.toml``::

       [project.entry-points."nfn_lab.zoo_formats"]
       my_zoo = "my_package.my_zoo:MyZooDataModule"

3. :func:`register_format` calls at run time.

Formats are named by class path and imported only when asked for, so this module imports
no format (and ``datamodules``, which builds on :mod:`nfn_lab.data`, is never imported back
at import time). Any class path ``package.module.Class`` also works where a name does.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nfn_lab.data.zoo import ZooDataModule

__all__ = [
    "BUILTIN_FORMATS",
    "ENTRY_POINT_GROUP",
    "format_class",
    "format_names",
    "import_class",
    "register_format",
    "zoo_formats",
]

BUILTIN_FORMATS: dict[str, str] = {
    "arrow_zoo": "datamodules.arrow_zoo.ArrowZooDataModule",
    "dwsnets_inr": "datamodules.dwsnets_inr.DWSNetsINRDataModule",
    "nfn_siren": "datamodules.nfn_siren.NFNSirenDataModule",
    "small_cnn_zoo": "datamodules.small_cnn_zoo.SmallCNNZooDataModule",
}
ENTRY_POINT_GROUP = "nfn_lab.zoo_formats"

_registered: dict[str, str | type[ZooDataModule]] = {}  # register_format's entries: class paths or classes


def register_format(name: str, cls: str | type[ZooDataModule]) -> None:
    """Registers ``cls`` (a ZooDataModule subclass or its class path ``package.module.Class``) as ``name``.

    Raises:
        ValueError: ``name`` is not a plain identifier, or ``cls`` is a class that is not a
            concrete ZooDataModule.
    """
    if not name.isidentifier():
        raise ValueError(f"format name {name!r} must be an identifier such as 'my_zoo' (no dots, no spaces).")
    if isinstance(cls, type):
        _check_format(cls, name)
    _registered[name] = cls


def _sources() -> dict[str, str | type[ZooDataModule] | importlib.metadata.EntryPoint]:
    """Every registered name and where its class comes from (nothing is imported)."""
    entry_points = {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    return {**BUILTIN_FORMATS, **entry_points, **_registered}


def format_names() -> list[str]:
    """The names of all registered formats, sorted (nothing is imported)."""
    return sorted(_sources())


def import_class(path: str) -> type:
    """The class named by ``package.module.Class`` (or an entry point's ``package.module:Class``).

    Raises:
        ImportError: the module or the class does not exist.
    """
    module_name, _, class_name = path.replace(":", ".").rpartition(".")
    try:
        found = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ImportError(f"cannot import the format class {path!r} ({err}).") from None
    if not isinstance(found, type):
        raise ImportError(f"{path!r} is a {type(found).__name__}, not a class.")
    return found


def _check_format(cls: type, name: str) -> type[ZooDataModule]:
    from nfn_lab.data.zoo import ZooDataModule

    if not issubclass(cls, ZooDataModule) or inspect.isabstract(cls):
        raise ValueError(f"format {name!r}: {cls.__module__}.{cls.__qualname__} is not a concrete ZooDataModule.")
    return cls


def _load(name: str, source: str | type[ZooDataModule] | importlib.metadata.EntryPoint) -> type[ZooDataModule]:
    if isinstance(source, importlib.metadata.EntryPoint):
        try:
            loaded = source.load()
        except (ImportError, AttributeError) as err:
            raise ImportError(f"cannot import the format class {source.value!r} ({err}).") from None
    else:
        loaded = import_class(source) if isinstance(source, str) else source
    return _check_format(loaded, name)


def format_class(name: str) -> type[ZooDataModule]:
    """The class of the format ``name`` (a registered name or a class path ``package.module.Class``).

    Raises:
        KeyError: ``name`` is neither registered nor a class path.
        ImportError: its class cannot be imported.
        ValueError: it is not a concrete ZooDataModule.
    """
    sources = _sources()
    if name in sources:
        return _load(name, sources[name])
    if "." in name:
        return _check_format(import_class(name), name)
    raise KeyError(name)


def _warn(name: str, err: Exception) -> None:
    warnings.warn(f"skipping zoo format {name!r} ({type(err).__name__}: {err})", stacklevel=3)


def zoo_formats(on_error: Callable[[str, Exception], None] = _warn) -> dict[str, type[ZooDataModule]]:
    """Name -> class of every registered format.

    A format whose class fails to load is left out and reported to ``on_error(name, error)``
    (default: a warning), so one broken package cannot hide the other formats.
    """
    found: dict[str, type[ZooDataModule]] = {}
    for name, source in sorted(_sources().items()):
        try:
            found[name] = _load(name, source)
        except Exception as err:  # a third-party module may raise anything at import
            on_error(name, err)
    return found

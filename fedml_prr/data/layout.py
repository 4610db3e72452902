"""Datasets read from a layout on disk: one reader per layout, registered as a dataset.

A layout reader is ``reader(root, *, clients, option=default, ...) -> Manifest``: it reads only
the files of ``clients`` (names of the layout's clients, in layout order, checked by the caller).
:func:`register_layout` registers it in :data:`LAYOUTS` with the layout's clients and classes,
and as a dataset (:mod:`fedml_prr.data.datasets`, options ``root``, ``cache``, ``workers``, the
reader's, then ``clients`` and ``class_names``) whose factory builds the federation either

* from a prepared cache (option ``cache=<folder>``, see :mod:`fedml_prr.data.cache`; with
  ``clients``, those clients of the cache), or
* from the layout itself (option ``root=<folder>``; every image is decoded at each run).

:func:`prepare_layout` writes the cache (``fedml-prr prepare``).
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

from fedml_prr.data.cache import check_cache_target, json_value, load_cache, read_cache_meta, write_cache
from fedml_prr.data.datasets import register_dataset
from fedml_prr.data.federation import Federation, FederationInfo
from fedml_prr.data.manifest import Manifest, PathLike, federation_from_manifest
from fedml_prr.data.selection import SELECTION_OPTIONS, fixed_class_names, restrict_federation, select_clients
from fedml_prr.registry import Registry, check_options

logger = logging.getLogger(__name__)

Reader = Callable[..., Manifest]
#: A layout's class names: fixed, or a function of its reader's options (defaults filled in).
ClassNames = Union[Sequence[str], Callable[[Mapping[str, Any]], Sequence[str]]]


@dataclass(frozen=True)
class Layout:
    """A registered layout: its reader and the federation's clients and classes it always has."""

    reader: Reader
    clients: Tuple[str, ...]
    class_names: ClassNames

    def classes(self, options: Mapping[str, Any]) -> Tuple[str, ...]:
        """The class names with the reader ``options`` (defaults filled in)."""
        return tuple(self.class_names(options) if callable(self.class_names) else self.class_names)


LAYOUTS: Registry = Registry("dataset layout")
"""The :class:`Layout` of every layout dataset, by name."""


#: The options every layout dataset takes besides its reader's (see :func:`build_layout_federation`).
SOURCE_OPTIONS = {"root": None, "cache": None, "workers": None}


def reader_options(reader: Reader) -> Dict[str, Any]:
    """The keyword options of a layout reader (all but its root and ``clients``) and their defaults."""
    return {p.name: p.default for p in list(inspect.signature(reader).parameters.values())[1:] if p.name != "clients"}


def layout_options(name: str, options: Dict[str, Any]) -> Dict[str, Any]:
    """Every option of layout ``name``, defaults filled in; an unknown option raises ``ValueError``."""
    defaults = reader_options(LAYOUTS.get(name).reader)
    check_options("dataset", name, options, defaults)
    return json_value({**defaults, **options})


def _class_hint(name: str) -> str:
    return " (choose them with the option classes)" if "classes" in reader_options(LAYOUTS.get(name).reader) else ""


def read_layout(name: str, root: PathLike, *, clients: Optional[Sequence[str]] = None,
                class_names: Optional[Sequence[str]] = None, **options: Any) -> Manifest:
    """Read (and validate) the manifest of dataset ``name`` from ``root``: the files of
    ``clients`` only (default: every client of the layout); ``class_names``, when given, must be
    the layout's classes."""
    layout = LAYOUTS.get(name)
    normalized = layout_options(name, options)
    selected = select_clients(name, layout.clients, clients)
    fixed_class_names(name, layout.classes(normalized), class_names, hint=_class_hint(name))
    manifest = layout.reader(Path(root), clients=selected, **normalized)
    manifest = replace(manifest, options=normalized)
    manifest.validate()
    return manifest


def prepare_layout(name: str, root: PathLike, out: PathLike, image_size: int, *, workers: Optional[int] = None,
                   overwrite: bool = False, progress: Optional[Callable[[int], None]] = None,
                   on_manifest: Optional[Callable[[Manifest], None]] = None, **options: Any) -> Path:
    """Read dataset ``name`` from ``root`` and write its cache at ``image_size`` into ``out``.

    ``on_manifest(manifest)`` is called once the layout is read (e.g. to size a progress bar).
    """
    check_cache_target(out, image_size, overwrite=overwrite)
    manifest = read_layout(name, root, **options)  # clients: a cache of those clients only
    if on_manifest is not None:
        on_manifest(manifest)
    return write_cache(manifest, out, image_size, workers=workers, overwrite=overwrite, progress=progress)


def _load_cached(name: str, cache: PathLike, image_size: int, root: Optional[PathLike],
                 clients: Optional[Sequence[str]], class_names: Optional[Sequence[str]],
                 options: Dict[str, Any]) -> Federation:
    """The federation of a prepared cache: the clients it holds, or ``clients`` of them."""
    layout_options(name, options)  # unknown options are errors here too
    if root is not None:
        recorded = read_cache_meta(cache)["source_root"]
        if Path(root).resolve() != Path(recorded):
            logger.warning("reading %s from cache %s, prepared from %s, not from root %s", name, cache,
                           recorded, root)
    federation = load_cache(cache, dataset=name, image_size=image_size, options=options)
    fixed_class_names(name, federation.class_names, class_names, hint=f" in its cache {cache}")
    if clients is None:
        return federation
    held = [c.name for c in federation.clients]
    return restrict_federation(federation, select_clients(name, held, clients, where=f"in its cache {cache}"))


def build_layout_federation(name: str, *, image_size: int, root: Optional[PathLike] = None,
                            cache: Optional[PathLike] = None, workers: Optional[int] = None,
                            clients: Optional[Sequence[str]] = None, class_names: Optional[Sequence[str]] = None,
                            **options: Any) -> Federation:
    """The federation of dataset ``name`` (of its ``clients`` only, if given) from a prepared
    ``cache`` if given, else from ``root``."""
    LAYOUTS.get(name)
    if cache is not None:
        return _load_cached(name, cache, image_size, root, clients, class_names, options)
    if root is None:
        raise ValueError(f"dataset {name!r} needs root=<its folder> (prr_data_root) or cache=<a folder made by "
                         f"`fedml-prr prepare {name}`> in prr_dataset_options; see docs/datasets.md")
    manifest = read_layout(name, root, clients=clients, class_names=class_names, **options)
    logger.info("decoding %d images of %s at %d px (prepare a cache once with `fedml-prr prepare` to skip this)",
                len(manifest.records), name, image_size)
    return federation_from_manifest(manifest, image_size, workers=workers)


def describe_layout(name: str, options: Mapping[str, Any]) -> FederationInfo:
    """The shape of layout dataset ``name`` from its constants and ``options`` (every dataset option)."""
    layout = LAYOUTS.get(name)
    normalized = layout_options(name, {k: v for k, v in options.items()
                                       if k not in SOURCE_OPTIONS and k not in SELECTION_OPTIONS})
    classes = fixed_class_names(name, layout.classes(normalized), options["class_names"], hint=_class_hint(name))
    return FederationInfo(name, "classification", classes, select_clients(name, layout.clients, options["clients"]))


def register_layout(name: str, *, clients: Sequence[str], class_names: ClassNames) -> Callable[[Reader], Reader]:
    """Register ``reader`` as layout ``name`` and as dataset ``name`` (``seed`` is unused: splits
    are fixed by the files and the layout's ``split_seed``).

    Parameters
    ----------
    clients:
        Every client of the layout, in silo order (each is seeded by its position here).
    class_names:
        Its classes: a list, or a function of the reader's options.
    """

    def decorator(reader: Reader) -> Reader:
        LAYOUTS.register(name)(Layout(reader, tuple(clients), class_names))

        def build(*, seed: int, image_size: int, **options: Any) -> Federation:
            return build_layout_federation(name, image_size=image_size, **options)

        build.__doc__ = (f"Dataset factory of layout {name!r}: options root or cache, workers, {reader.__name__}'s, "
                         "clients and class_names.")
        register_dataset(name, options={**SOURCE_OPTIONS, **reader_options(reader), **SELECTION_OPTIONS},
                         describe=lambda options: describe_layout(name, options))(build)
        return reader

    return decorator

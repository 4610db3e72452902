"""Datasets read from a layout on disk: one reader per layout, registered as a dataset.

A layout reader is ``reader(root, *, option=default, ...) -> Manifest``; :func:`register_layout`
registers it in :data:`LAYOUTS` and as a dataset (:mod:`fedml_prr.data.datasets`, options
``root``, ``cache``, ``workers`` and the reader's) whose factory builds the federation either

* from a prepared cache (option ``cache=<folder>``, see :mod:`fedml_prr.data.cache`), or
* from the layout itself (option ``root=<folder>``; every image is decoded at each run).

:func:`prepare_layout` writes the cache (``fedml-prr prepare``).
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from fedml_prr.data.cache import check_cache_target, json_value, load_cache, read_cache_meta, write_cache
from fedml_prr.data.datasets import register_dataset
from fedml_prr.data.federation import Federation
from fedml_prr.data.manifest import Manifest, PathLike, federation_from_manifest
from fedml_prr.registry import Registry, check_options

logger = logging.getLogger(__name__)

Reader = Callable[..., Manifest]
LAYOUTS: Registry = Registry("dataset layout")
"""Layout readers ``reader(root, **options) -> Manifest`` by dataset name."""


#: The options every layout dataset takes besides its reader's (see :func:`build_layout_federation`).
SOURCE_OPTIONS = {"root": None, "cache": None, "workers": None}


def reader_options(reader: Reader) -> Dict[str, Any]:
    """The keyword options of a layout reader (all but its first argument, the root) and their defaults."""
    return {p.name: p.default for p in list(inspect.signature(reader).parameters.values())[1:]}


def layout_options(name: str, options: Dict[str, Any]) -> Dict[str, Any]:
    """Every option of layout ``name``, defaults filled in; an unknown option raises ``ValueError``."""
    defaults = reader_options(LAYOUTS.get(name))
    check_options("dataset", name, options, defaults)
    return json_value({**defaults, **options})


def read_layout(name: str, root: PathLike, **options: Any) -> Manifest:
    """Read (and validate) the manifest of dataset ``name`` from ``root``."""
    normalized = layout_options(name, options)
    manifest = LAYOUTS.get(name)(Path(root), **normalized)
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
    manifest = read_layout(name, root, **options)
    if on_manifest is not None:
        on_manifest(manifest)
    return write_cache(manifest, out, image_size, workers=workers, overwrite=overwrite, progress=progress)


def build_layout_federation(name: str, *, image_size: int, root: Optional[PathLike] = None,
                            cache: Optional[PathLike] = None, workers: Optional[int] = None,
                            **options: Any) -> Federation:
    """The federation of dataset ``name`` from a prepared ``cache`` if given, else from ``root``."""
    LAYOUTS.get(name)
    if cache is not None:
        layout_options(name, options)  # unknown options are errors here too
        if root is not None:
            recorded = read_cache_meta(cache)["source_root"]
            if Path(root).resolve() != Path(recorded):
                logger.warning("reading %s from cache %s, prepared from %s, not from root %s", name, cache,
                               recorded, root)
        return load_cache(cache, dataset=name, image_size=image_size, options=options)
    if root is None:
        raise ValueError(f"dataset {name!r} needs root=<its folder> (prr_data_root) or cache=<a folder made by "
                         f"`fedml-prr prepare {name}`> in prr_dataset_options; see docs/datasets.md")
    manifest = read_layout(name, root, **options)
    logger.info("decoding %d images of %s at %d px (prepare a cache once with `fedml-prr prepare` to skip this)",
                len(manifest.records), name, image_size)
    return federation_from_manifest(manifest, image_size, workers=workers)


def register_layout(name: str) -> Callable[[Reader], Reader]:
    """Register ``reader`` as layout ``name`` and as dataset ``name`` (``seed`` is unused: splits
    are fixed by the files and the layout's ``split_seed``)."""

    def decorator(reader: Reader) -> Reader:
        LAYOUTS.register(name)(reader)

        def build(*, seed: int, image_size: int, **options: Any) -> Federation:
            return build_layout_federation(name, image_size=image_size, **options)

        build.__doc__ = f"Dataset factory of layout {name!r}: options root or cache, workers, and {reader.__name__}'s."
        register_dataset(name, options={**SOURCE_OPTIONS, **reader_options(reader)})(build)
        return reader

    return decorator

"""A prepared image cache: decode and resize a dataset once, memory-map it at every run.

A prepared cache is a store (:mod:`fedml_prr.data.store`: ``meta.json``, ``images.npy``
``uint8 [N, 3, S, S]``, ``labels.npy`` ``int64 [N]``) plus ``splits.csv``, the split file
(``image_id,client,split,label,lesion_id``) of every row.  Its ``meta.json`` also records the
source dataset, its options, the source root and how images were resized.

:func:`write_cache` fills it from a :class:`~fedml_prr.data.manifest.Manifest`;
:func:`load_cache` maps the arrays copy-on-write (nothing is read until used, the files are
never modified) and returns a :class:`~fedml_prr.data.federation.Federation` whose splits are
views of the maps.  A cache that does not match what a run asks for (dataset, image size, an
explicitly given option, format version) is an error, never silently used; so is a truncated
array file.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional

import numpy as np

from fedml_prr.data.federation import SPLITS, Federation
from fedml_prr.data.images import decode_images
from fedml_prr.data.manifest import SPLIT_EXTRA_COLUMNS, Manifest, PathLike, split_ranges, split_rows
from fedml_prr.data.split_file import format_split_file
from fedml_prr.data.store import FORMAT as CACHE_FORMAT  # noqa: F401  (kept as public names of this module)
from fedml_prr.data.store import VERSION as CACHE_VERSION  # noqa: F401
from fedml_prr.data.store import IMAGES, LABELS, META, open_store, read_store_meta, write_store

logger = logging.getLogger(__name__)

#: How images are brought to the square size (recorded in the cache).
RESIZE = "rgb, jpeg draft (exact box), bilinear resize to the square (full field of view)"
SPLITS_CSV = "splits.csv"


def _prepare_again(path: Path, meta: Optional[Mapping[str, Any]] = None) -> str:
    """How to rebuild the cache at ``path`` (with its dataset, root and size when known)."""
    meta = meta or {}
    return (f"prepare it again: fedml-prr prepare {meta.get('dataset', 'DATASET')} --root "
            f"{meta.get('source_root', '...')} --out {path} --size {meta.get('image_size', '...')} --overwrite "
            "(and the --option values listed in its meta.json)")


def json_value(value: Any) -> Any:
    """Options as JSON would return them (tuples -> lists, paths -> str), for comparisons."""
    return json.loads(json.dumps(value, default=str))


def check_cache_target(out: PathLike, image_size: int, *, overwrite: bool) -> Path:
    """``out`` as a Path if a cache of ``image_size`` px may be written there, else a clear error."""
    if image_size < 8:
        raise ValueError(f"image size must be at least 8, got {image_size}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file; give a folder for the cache")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} is not empty; choose a new folder or pass --overwrite")
    return out


def write_cache(manifest: Manifest, out: PathLike, image_size: int, *, workers: Optional[int] = None,
                overwrite: bool = False, progress: Optional[Callable[[int], None]] = None) -> Path:
    """Decode every image of ``manifest`` at ``image_size`` into the cache folder ``out``.

    Parameters
    ----------
    overwrite:
        Replace an existing cache in ``out`` (otherwise a non-empty ``out`` is an error).
    progress:
        Called with the number of images decoded since the last call.
    """
    out = check_cache_target(out, image_size, overwrite=overwrite)
    if out.is_dir() and any(out.iterdir()):
        for name in (META, IMAGES, LABELS, SPLITS_CSV):  # meta first: a half-replaced cache is never valid
            (out / name).unlink(missing_ok=True)
    manifest = manifest.ordered()
    records = manifest.records
    logger.info("preparing %s: %d images at %d px into %s", manifest.dataset, len(records), image_size, out)
    counts = manifest.counts()
    meta = {
        "dataset": manifest.dataset,
        "options": json_value(manifest.options),
        "class_names": list(manifest.class_names),
        "clients": [{"name": c, "rows": {s: list(r[s]) for s in SPLITS}, "class_counts": counts[c]}
                    for c, r in zip(manifest.clients, split_ranges(manifest))],
        "source_root": str(Path(manifest.root).resolve()),
        "resize": RESIZE,
    }
    return write_store(
        out, meta, image_size=image_size, labels=np.array([r.label for r in records], dtype=np.int64),
        fill_images=lambda images: decode_images([r.path for r in records], image_size, images, workers=workers,
                                                 progress=progress),
        text_files={SPLITS_CSV: format_split_file(split_rows(manifest), extra_columns=SPLIT_EXTRA_COLUMNS)})


def read_cache_meta(path: PathLike) -> Dict[str, Any]:
    """The ``meta.json`` of a cache; clear errors for a missing, partial or foreign folder."""
    path = Path(path)
    if not (path / META).is_file():
        raise FileNotFoundError(f"no prepared cache in {path} (missing {META}); create it with "
                                f"`fedml-prr prepare DATASET --root ... --out {path} --size ...`")
    return read_store_meta(path, rebuild=_prepare_again(path))


def load_cache(path: PathLike, *, dataset: Optional[str] = None, image_size: Optional[int] = None,
               options: Optional[Mapping[str, Any]] = None) -> Federation:
    """Memory-map a prepared cache as a federation, checking it is the one asked for.

    Parameters
    ----------
    dataset, image_size:
        When given, must equal what the cache was prepared with.
    options:
        Layout options the run gives explicitly; each must equal the cache's value (options not
        given are taken from the cache).

    Raises
    ------
    FileNotFoundError
        No ``meta.json`` or data file in ``path``.
    ValueError
        Another format version, dataset, size or option; a truncated or damaged data file, or
        data files inconsistent with the meta (each message says how to prepare it again).
    """
    path = Path(path)
    meta = read_cache_meta(path)
    problems = []
    if dataset is not None and str(dataset).lower() != str(meta.get("dataset")).lower():
        problems.append(f"dataset {meta.get('dataset')!r} (the run asks for {dataset!r})")
    if image_size is not None and int(image_size) != int(meta["image_size"]):
        problems.append(f"image size {meta['image_size']} (the run asks for {image_size}: prr_image_size)")
    recorded = meta.get("options", {})
    for key, value in (options or {}).items():
        if key not in recorded:
            problems.append(f"no option {key!r} (its options: {sorted(recorded)})")
        elif json_value(value) != recorded[key]:
            problems.append(f"option {key}={recorded[key]!r} (the run asks for {value!r})")
    if problems:
        raise ValueError(f"cache {path} was prepared with {'; '.join(problems)}; prepare a cache for this run "
                         "(fedml-prr prepare) or change the config to match")
    federation = open_store(path, meta, rebuild=_prepare_again(path, meta))
    logger.info("memory-mapped cache %s: %s, %d images at %d px", path, federation.name, meta["num_images"],
                meta["image_size"])
    return federation

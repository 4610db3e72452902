"""A prepared image cache: decode and resize a dataset once, memory-map it at every run.

A cache is a folder::

    meta.json     format and version, source dataset, its options, image size, class names,
                  per-client row ranges and class counts, source root
    images.npy    uint8 [N, 3, S, S], rows grouped by client (silo order) then split
    labels.npy    int64 [N]
    splits.csv    image_id,client,split,label,lesion_id of every row (usable as a split file)

:func:`write_cache` fills it from a :class:`~fedml_prr.data.manifest.Manifest`;
:func:`load_cache` maps ``images.npy`` copy-on-write (nothing is read until used, the file is
never modified) and returns a :class:`~fedml_prr.data.federation.Federation` whose splits are
views of the map.  A cache that does not match what a run asks for (dataset, image size, an
explicitly given option, format version) is an error, never silently used.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional

import numpy as np
import torch

from fedml_prr.data.federation import SPLITS, Federation
from fedml_prr.files import atomic_write, atomic_write_text
from fedml_prr.data.images import decode_images
from fedml_prr.data.manifest import SPLIT_EXTRA_COLUMNS, Manifest, PathLike, assemble_federation, split_ranges, split_rows
from fedml_prr.data.split_file import write_split_file

logger = logging.getLogger(__name__)

CACHE_FORMAT = "fedml_prr.image_cache"
CACHE_VERSION = 1
#: How images are brought to the square size (recorded in the cache).
RESIZE = "rgb, jpeg draft, bilinear resize to the square (full field of view)"
META, IMAGES, LABELS, SPLITS_CSV = "meta.json", "images.npy", "labels.npy", "splits.csv"


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


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:  # a file handle: np.save would append ".npy" to a path
        np.save(handle, array)


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
    out.mkdir(parents=True, exist_ok=True)
    manifest = manifest.ordered()
    records = manifest.records
    logger.info("preparing %s: %d images at %d px into %s", manifest.dataset, len(records), image_size, out)

    def write_images(tmp: Path) -> None:
        images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                           shape=(len(records), 3, image_size, image_size))
        decode_images([r.path for r in records], image_size, images, workers=workers, progress=progress)
        images.flush()
        del images

    atomic_write(out / IMAGES, write_images)
    atomic_write(out / LABELS, lambda tmp: _save_npy(tmp, np.array([r.label for r in records], dtype=np.int64)))
    write_split_file(out / SPLITS_CSV, split_rows(manifest), extra_columns=SPLIT_EXTRA_COLUMNS)

    counts = manifest.counts()
    meta = {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "dataset": manifest.dataset,
        "image_size": image_size,
        "options": json_value(manifest.options),
        "class_names": list(manifest.class_names),
        "clients": [{"name": c, "rows": {s: list(r[s]) for s in SPLITS}, "class_counts": counts[c]}
                    for c, r in zip(manifest.clients, split_ranges(manifest))],
        "num_images": len(records),
        "source_root": str(Path(manifest.root).resolve()),
        "resize": RESIZE,
    }
    atomic_write_text(out / META, json.dumps(meta, indent=1))
    return out


def read_cache_meta(path: PathLike) -> Dict[str, Any]:
    """The ``meta.json`` of a cache; clear errors for a missing, partial or foreign folder."""
    path = Path(path)
    meta_path = path / META
    if not meta_path.is_file():
        raise FileNotFoundError(f"no prepared cache in {path} (missing {META}); create it with "
                                f"`fedml-prr prepare DATASET --root ... --out {path} --size ...`")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{meta_path} is not valid JSON ({error}); prepare the cache again") from error
    if meta.get("format") != CACHE_FORMAT:
        raise ValueError(f"{meta_path} is not a fedml_prr image cache (format {meta.get('format')!r})")
    if meta.get("version") != CACHE_VERSION:
        raise ValueError(f"cache {path} has format version {meta.get('version')}, this fedml_prr reads version "
                         f"{CACHE_VERSION}; prepare the cache again")
    return meta


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
        Another format version, dataset, size or option; data files inconsistent with the meta.
    """
    path = Path(path)
    meta = read_cache_meta(path)
    problems = []
    if dataset is not None and str(dataset).lower() != str(meta["dataset"]).lower():
        problems.append(f"dataset {meta['dataset']!r} (the run asks for {dataset!r})")
    if image_size is not None and int(image_size) != int(meta["image_size"]):
        problems.append(f"image size {meta['image_size']} (the run asks for {image_size}: prr_image_size)")
    for key, value in (options or {}).items():
        if key not in meta["options"]:
            problems.append(f"no option {key!r} (its options: {sorted(meta['options'])})")
        elif json_value(value) != meta["options"][key]:
            problems.append(f"option {key}={meta['options'][key]!r} (the run asks for {value!r})")
    if problems:
        raise ValueError(f"cache {path} was prepared with {'; '.join(problems)}; prepare a cache for this run "
                         "(fedml-prr prepare) or change the config to match")
    for name in (IMAGES, LABELS):
        if not (path / name).is_file():
            raise FileNotFoundError(f"cache {path} lacks {name}; prepare it again")
    images = np.load(path / IMAGES, mmap_mode="c")  # copy-on-write: writable views, file untouched
    labels = np.load(path / LABELS)
    size = int(meta["image_size"])
    if images.shape != (meta["num_images"], 3, size, size) or images.dtype != np.uint8 or len(labels) != len(images):
        raise ValueError(f"cache {path}: {IMAGES} is {images.dtype} {images.shape} with {len(labels)} labels, "
                         f"{META} says {meta['num_images']} images of {size} px; prepare it again")
    clients = [c["name"] for c in meta["clients"]]
    ranges = [c["rows"] for c in meta["clients"]]
    logger.info("memory-mapped cache %s: %s, %d images at %d px", path, meta["dataset"], len(images), size)
    return assemble_federation(meta["dataset"], meta["class_names"], clients, ranges,
                               torch.from_numpy(images), torch.from_numpy(labels))

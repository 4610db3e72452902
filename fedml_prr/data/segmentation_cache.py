"""Automatic cache of preprocessed segmentation federations (decoded, resized uint8 slices and masks).

Loaders of datasets on disk decode and resize every image (or NIfTI volume) once; the result is
saved as a store (:mod:`fedml_prr.data.store`, the prepared cache's format with masks as labels)
in the folder ``<cache_dir>/<dataset>-<key>/``, where ``key`` hashes everything the result
depends on: the loader's version, its options and, for every source file, its path, size and
modification time.  Editing, adding or removing a file changes the key, so a stale cache is never
read.  A cache that cannot be read (truncated, damaged, foreign) is rebuilt with a warning; a
cache folder that cannot be written is skipped with a warning (the data still loads).  Caches of
older versions (single ``<dataset>-<key>.pt`` files) are not looked for: the data is
preprocessed again once and stored in the new form.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

from .federation import Federation
from .store import META, open_store, read_store_meta, write_federation_store

logger = logging.getLogger(__name__)

CACHE_FOLDER = ".fedml_prr_cache"


def file_fingerprint(paths: Iterable[Path], root: Path) -> list:
    """``[relative path, size, mtime_ns]`` of every file, sorted: what a cache key depends on."""
    out = []
    for path in sorted(Path(p) for p in paths):
        stat = path.stat()
        out.append([str(path.relative_to(root)), stat.st_size, stat.st_mtime_ns])
    return out


def cache_key(parts: Mapping[str, Any]) -> str:
    """A short stable hash of a JSON-serialisable mapping."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def default_cache_dir(root: Path) -> Path:
    return Path(root) / CACHE_FOLDER


def cache_folder(cache_dir: Path, dataset: str, key_parts: Mapping[str, Any]) -> Path:
    """The store folder of ``key_parts``: ``<cache_dir>/<dataset>-<key>``."""
    return Path(cache_dir) / f"{dataset}-{cache_key(key_parts)}"


def _load(folder: Path, key: str) -> Federation:
    rebuild = f"delete the folder {folder}; it is rebuilt at the next run"
    meta = read_store_meta(folder, rebuild=rebuild)
    if meta.get("key") != key:
        raise ValueError(f"{folder / META} was written for key {meta.get('key')!r}, not {key!r}; {rebuild}")
    return open_store(folder, meta, rebuild=rebuild)


def load_or_build(cache_dir: Optional[Path], dataset: str, key_parts: Mapping[str, Any],
                  build: Callable[[], Federation]) -> Federation:
    """The cached federation of ``key_parts`` if there is one, else ``build()`` (then cached).

    ``cache_dir=None`` disables the cache.  A cached federation's tensors are copy-on-write
    memory maps of the cache files.
    """
    if cache_dir is None:
        return build()
    folder = cache_folder(cache_dir, dataset, key_parts)
    key = folder.name[len(dataset) + 1:]
    if (folder / META).is_file():
        try:
            federation = _load(folder, key)
            logger.info("loaded preprocessed %s from the cache %s", dataset, folder)
            return federation
        except (OSError, ValueError, KeyError, TypeError) as exc:  # truncated, damaged or foreign: rebuild it
            logger.warning("ignoring the unreadable cache %s (%s); rebuilding it", folder, exc)
    federation = build()
    try:
        write_federation_store(folder, federation, {"dataset": dataset, "key": key})
        logger.info("cached preprocessed %s in %s", dataset, folder)
    except OSError as exc:
        logger.warning("could not write the cache %s (%s); set the dataset option cache_dir to a writable "
                       "folder to avoid preprocessing again", folder, exc)
    return federation

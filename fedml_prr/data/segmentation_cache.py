"""On-disk cache of preprocessed segmentation federations (decoded, resized uint8 slices and masks).

Loaders of datasets on disk decode and resize every image (or NIfTI volume) once; the result is
saved as ``<cache_dir>/<dataset>-<key>.pt`` where ``key`` hashes everything the result depends
on: the loader's version, its options and, for every source file, its path, size and
modification time.  Editing, adding or removing a file changes the key, so a stale cache is never
read.  A cache folder that cannot be written is skipped with a warning (the data still loads).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

import torch

from ..files import atomic_torch_save
from .federation import SPLITS, ClientData, Federation, ImageSplit

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


def federation_to_dict(federation: Federation) -> dict:
    return {"name": federation.name, "class_names": list(federation.class_names),
            "clients": [{"name": c.name, **{s: {"images": c.split(s).images, "labels": c.split(s).labels}
                                            for s in SPLITS}} for c in federation.clients]}


def federation_from_dict(data: Mapping[str, Any]) -> Federation:
    clients = tuple(ClientData(c["name"], **{s: ImageSplit(c[s]["images"], c[s]["labels"]) for s in SPLITS})
                    for c in data["clients"])
    return Federation(data["name"], tuple(data["class_names"]), clients)


def default_cache_dir(root: Path) -> Path:
    return Path(root) / CACHE_FOLDER


def load_or_build(cache_dir: Optional[Path], dataset: str, key_parts: Mapping[str, Any],
                  build: Callable[[], Federation]) -> Federation:
    """The cached federation of ``key_parts`` if there is one, else ``build()`` (then cached).

    ``cache_dir=None`` disables the cache.
    """
    if cache_dir is None:
        return build()
    path = Path(cache_dir) / f"{dataset}-{cache_key(key_parts)}.pt"
    if path.is_file():
        try:
            federation = federation_from_dict(torch.load(path, weights_only=True))
            logger.info("loaded preprocessed %s from the cache %s", dataset, path)
            return federation
        except Exception as exc:  # a truncated or foreign file: rebuild it
            logger.warning("ignoring unreadable cache file %s (%s); rebuilding it", path, exc)
    federation = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_torch_save(federation_to_dict(federation), path)
        logger.info("cached preprocessed %s in %s", dataset, path)
    except OSError as exc:
        logger.warning("could not write the cache %s (%s); set the dataset option cache_dir to a writable "
                       "folder to avoid preprocessing again", path, exc)
    return federation

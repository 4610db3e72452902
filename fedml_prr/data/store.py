"""The on-disk format of a decoded federation, shared by both caches.

A store is a folder::

    meta.json     format and version, task, image size, image count, class names, per client
                  its row range per split and class counts (pixels for masks), plus the
                  writer's own keys (the prepared cache: dataset, options, source root; the
                  automatic cache: its hash key)
    images.npy    uint8 [N, 3, S, S], rows grouped by client (silo order) then split
    labels.npy    int64 [N] class indices, or uint8 [N, S, S] segmentation masks
    (text files the writer adds, e.g. the prepared cache's splits.csv)

Every file is written atomically (:mod:`fedml_prr.files`) and ``meta.json`` last, after the old
one is removed: a folder without ``meta.json`` is never a store.  :func:`open_store` maps both
arrays copy-on-write (nothing is read until used; the files are never modified) after checking
each file holds the bytes its header promises, so a truncated file is an error that names it,
not a numpy failure.

Users: :mod:`fedml_prr.data.cache` (``fedml-prr prepare``) and
:mod:`fedml_prr.data.segmentation_cache` (automatic, hash-keyed).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple, Union

import numpy as np
import torch

from fedml_prr.data.federation import SPLITS, ClientData, Federation, ImageSplit
from fedml_prr.files import atomic_write, atomic_write_text

PathLike = Union[str, Path]

FORMAT = "fedml_prr.image_cache"
#: Version 1 since the first prepared cache: segmentation masks and the ``task`` key were added
#: without changing how a version-1 reader reads the files, and older caches lack only ``task``.
VERSION = 1
META, IMAGES, LABELS = "meta.json", "images.npy", "labels.npy"


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:  # a handle: np.save would append ".npy" to a temporary path
        np.save(handle, array)


def _check_labels(labels: np.ndarray, num_images: int, image_size: int) -> str:
    """The task the labels encode; ``ValueError`` for any other shape or dtype."""
    if labels.shape == (num_images,) and labels.dtype == np.int64:
        return "classification"
    if labels.shape == (num_images, image_size, image_size) and labels.dtype in (np.uint8, np.int64):
        return "segmentation"
    raise ValueError(f"labels must be int64 [{num_images}] or uint8/int64 masks [{num_images}, {image_size}, "
                     f"{image_size}], got {labels.dtype} {labels.shape}")


def write_store(folder: PathLike, meta: Mapping[str, Any], *, image_size: int, labels: np.ndarray,
                fill_images: Callable[[np.ndarray], None], text_files: Mapping[str, str] = {}) -> Path:
    """Write a store into ``folder`` (created if needed; its store files are replaced).

    Parameters
    ----------
    meta:
        The writer's keys (``class_names`` and ``clients`` at least); ``format``, ``version``,
        ``task``, ``image_size`` and ``num_images`` are added.
    labels:
        ``int64 [N]`` or masks ``[N, S, S]``; ``N`` is the number of images.
    fill_images:
        Called once with the writable memory map ``uint8 [N, 3, S, S]`` of ``images.npy`` to fill.
    text_files:
        ``name -> text`` written next to the arrays, before ``meta.json``.
    """
    folder = Path(folder)
    num_images = len(labels)
    task = _check_labels(labels, num_images, image_size)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / META).unlink(missing_ok=True)  # the folder is not a store until the new meta lands

    def write_images(tmp: Path) -> None:
        images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                           shape=(num_images, 3, image_size, image_size))
        fill_images(images)
        images.flush()
        del images

    atomic_write(folder / IMAGES, write_images)
    atomic_write(folder / LABELS, lambda tmp: _save_npy(tmp, labels))
    for name, text in text_files.items():
        atomic_write_text(folder / name, text)
    full = {"format": FORMAT, "version": VERSION, "task": task, "image_size": image_size, "num_images": num_images,
            **meta}
    atomic_write_text(folder / META, json.dumps(full, indent=1))
    return folder


def federation_rows(federation: Federation) -> List[Dict[str, Tuple[int, int]]]:
    """Per client, ``split -> (start, stop)`` rows of the federation laid out client by client, split by split."""
    ranges, position = [], 0
    for client in federation.clients:
        spans = {}
        for split in SPLITS:
            n = len(client.split(split))
            spans[split] = (position, position + n)
            position += n
        ranges.append(spans)
    return ranges


def write_federation_store(folder: PathLike, federation: Federation, meta: Mapping[str, Any]) -> Path:
    """Write an in-memory federation as a store (``meta``: the writer's extra keys)."""
    parts = [c.split(s) for c in federation.clients for s in SPLITS]
    labels = torch.cat([p.labels.cpu() for p in parts]).numpy()
    rows = federation_rows(federation)

    def fill(images: np.ndarray) -> None:
        position = 0
        for part in parts:
            images[position:position + len(part)] = part.images.cpu().numpy()
            position += len(part)

    counts = [{s: c.split(s).class_counts(federation.num_classes).tolist() for s in SPLITS} for c in federation.clients]
    return write_store(folder, {"name": federation.name, "class_names": list(federation.class_names),
                                "clients": [{"name": c.name, "rows": {s: list(r[s]) for s in SPLITS}, "class_counts": n}
                                            for c, r, n in zip(federation.clients, rows, counts)], **meta},
                       image_size=federation.image_size, labels=labels, fill_images=fill)


def read_store_meta(folder: PathLike, *, rebuild: str) -> Dict[str, Any]:
    """The ``meta.json`` of a store.

    Parameters
    ----------
    rebuild:
        How to rebuild the store, appended to every error.

    Raises
    ------
    FileNotFoundError
        No ``meta.json``.
    ValueError
        Invalid JSON, another format, a version this code does not read.
    """
    meta_path = Path(folder) / META
    if not meta_path.is_file():
        raise FileNotFoundError(f"{folder} holds no {META}; {rebuild}")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{meta_path} is not valid JSON ({error}); {rebuild}") from error
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path} is not a fedml_prr image cache (format "
                         f"{meta.get('format') if isinstance(meta, dict) else None!r}); {rebuild}")
    if meta.get("version") != VERSION:
        raise ValueError(f"cache {folder} has format version {meta.get('version')}, this fedml_prr reads version "
                         f"{VERSION}; {rebuild}")
    return meta


def _open_npy(path: Path, rebuild: str) -> np.ndarray:
    """``path`` memory-mapped copy-on-write, after checking it holds every byte its header promises."""
    if not path.is_file():
        raise FileNotFoundError(f"cache file {path} is missing; {rebuild}")
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(handle)
            offset = handle.tell()
    except (ValueError, EOFError, OSError) as error:
        raise ValueError(f"cache file {path} is truncated or damaged: its .npy header cannot be read ({error}); "
                         f"{rebuild}") from error
    expected = offset + math.prod(shape) * dtype.itemsize
    size = path.stat().st_size
    if size < expected:
        raise ValueError(f"cache file {path} is truncated: {size} of {expected} bytes; {rebuild}")
    return np.load(path, mmap_mode="c")  # copy-on-write: writable views, the file is never modified


def assemble_federation(name: str, class_names: Sequence[str], clients: Sequence[str],
                        ranges: Sequence[Mapping[str, Sequence[int]]], images: torch.Tensor,
                        labels: torch.Tensor) -> Federation:
    """A federation whose splits are row ranges (views) of ``images`` / ``labels``."""
    built = []
    for client, spans in zip(clients, ranges):
        parts = {s: ImageSplit(images[spans[s][0]:spans[s][1]], labels[spans[s][0]:spans[s][1]]) for s in SPLITS}
        built.append(ClientData(client, **parts))
    return Federation(name, tuple(class_names), tuple(built))


def open_store(folder: PathLike, meta: Mapping[str, Any], *, rebuild: str) -> Federation:
    """The federation of a store (from :func:`read_store_meta`), its splits views of the memory maps.

    Raises
    ------
    FileNotFoundError
        ``images.npy`` or ``labels.npy`` is missing.
    ValueError
        A truncated or damaged array file, or arrays that do not match ``meta.json``; each
        message names the file and ends with ``rebuild``.
    """
    folder = Path(folder)
    images, labels = _open_npy(folder / IMAGES, rebuild), _open_npy(folder / LABELS, rebuild)
    size, count = int(meta["image_size"]), int(meta["num_images"])
    if images.shape != (count, 3, size, size) or images.dtype != np.uint8:
        raise ValueError(f"cache file {folder / IMAGES} is {images.dtype} {images.shape}, {META} says {count} images "
                         f"of {size} px; {rebuild}")
    try:
        task = _check_labels(labels, count, size)
    except ValueError as error:
        raise ValueError(f"cache file {folder / LABELS}: {error}; {rebuild}") from None
    if meta.get("task", task) != task:
        raise ValueError(f"cache file {folder / LABELS} holds {task} labels, {META} says {meta['task']}; {rebuild}")
    clients = [c["name"] for c in meta["clients"]]
    ranges = [c["rows"] for c in meta["clients"]]
    if any(not 0 <= r[s][0] <= r[s][1] <= count for r in ranges for s in SPLITS):
        raise ValueError(f"{folder / META}: client row ranges exceed the {count} images; {rebuild}")
    return assemble_federation(meta.get("name", meta.get("dataset", folder.name)), meta["class_names"], clients,
                               ranges, torch.from_numpy(images), torch.from_numpy(labels))

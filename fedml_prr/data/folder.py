"""``image_folder``: a federation read from a plain folder tree.

Layout::

    <root>/<client>/{train,valid,test}/<class_name>/<image files>

Clients are the sorted sub-folders of ``root`` (hidden ones skipped); the option ``clients``
reads only the named ones (a hospital's ``root`` may hold its own folder only). Class names are
the option ``class_names`` if given (folders are mapped to it by name: a client, or every loaded
client, may lack a class; a folder of another class is an error), else the sorted union of the
class folders found in the loaded clients' ``train`` splits; a client may lack some classes
(imbalanced data), but a class folder in ``valid``/``test`` that no train split has is an error, and
so is anything that would silently train a different model than the folders suggest: class names
that differ only by case (``mel`` and ``MEL``), a client sharing no class with the others, a class
with no training image in any client, and a broken symbolic link (never skipped).
Images are decoded by :func:`~fedml_prr.data.images.decode_image` as the dermoscopy layouts
are: read with PIL (JPEGs at a reduced DCT scale still at least ``image_size``), converted to
RGB, resized (antialiased bilinear) to ``image_size`` square and stored as ``uint8``. Files with
other extensions are ignored.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from fedml_prr.data.datasets import register_dataset
from fedml_prr.data.federation import SPLITS, ClientData, Federation, FederationInfo, ImageSplit
from fedml_prr.data.images import decode_images
from fedml_prr.data.selection import name_list, select_clients

logger = logging.getLogger(__name__)

DEFAULT_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _refuse_broken_link(path: Path) -> None:
    if path.is_symlink() and not path.exists():
        raise FileNotFoundError(f"broken symbolic link {path} -> {path.readlink()} (its target does not exist); "
                                "restore the target or remove the link")


def _subdirs(path: Path) -> list[Path]:
    entries = [p for p in path.iterdir() if not p.name.startswith(".")]
    for entry in entries:
        if not entry.suffix:  # a link to a missing image is reported with the images
            _refuse_broken_link(entry)
    return sorted(p for p in entries if p.is_dir())


def _image_files(folder: Path, extensions: Sequence[str]) -> list[Path]:
    candidates = [p for p in folder.iterdir() if p.suffix.lower() in extensions]
    for path in candidates:
        _refuse_broken_link(path)
    return sorted(p for p in candidates if p.is_file())


def _check_class_names(root: Path, client_dirs: Sequence[Path]) -> list[str]:
    """The sorted class names (the union of the clients' train class folders), refusing what would
    train a wrong model: names that differ only by case (two classes for one), a client sharing no
    class with the others (its classes would be separate outputs)."""
    by_client = {c.name: {d.name for d in _subdirs(c / "train")} for c in client_dirs}
    class_names = sorted(set().union(*by_client.values()))
    spellings: dict = {}
    for name in class_names:
        spellings.setdefault(name.lower(), []).append(name)
    clashes = [names for names in spellings.values() if len(names) > 1]
    if clashes:
        where = "; ".join(" vs ".join(f"{n!r} ({', '.join(c for c in by_client if n in by_client[c])})" for n in names)
                          for names in clashes)
        raise ValueError(f"class folders under {root} differ only by case: {where}; they would be separate classes - "
                         "rename them to one spelling")
    if len(by_client) > 1:
        for client, names in by_client.items():
            others = set().union(*(n for c, n in by_client.items() if c != client))
            if names and not names & others:
                raise ValueError(f"client {client!r} shares no class with the other clients: its train classes "
                                 f"{sorted(names)}, theirs {sorted(others)}; rename its class folders to the "
                                 "federation's class names")
    return class_names


def _load_split(folder: Path, class_names: Sequence[str], image_size: int, extensions: Sequence[str]) -> ImageSplit:
    paths, labels = [], []
    for class_dir in _subdirs(folder):
        for path in _image_files(class_dir, extensions):
            paths.append(path)
            labels.append(class_names.index(class_dir.name))
    images = np.empty((len(paths), 3, image_size, image_size), dtype=np.uint8)
    decode_images(paths, image_size, images)  # JPEG draft, as the dermoscopy layouts
    return ImageSplit(torch.from_numpy(images), torch.tensor(labels, dtype=torch.int64))


def load_image_folder_federation(
    root: Union[str, Path],
    *,
    image_size: int,
    extensions: Sequence[str] = DEFAULT_EXTENSIONS,
    clients: Optional[Sequence[str]] = None,
    class_names: Optional[Sequence[str]] = None,
) -> Federation:
    """Read ``<root>/<client>/<split>/<class_name>/<image>`` into a :class:`Federation`.

    Parameters
    ----------
    clients:
        Read only these client folders (default: every one); the others need not exist.
    class_names:
        Label ``i`` means ``class_names[i]`` (default: the loaded train splits' class folders, sorted).

    Raises
    ------
    FileNotFoundError
        ``root`` or a client's ``train``/``valid``/``test`` folder is missing, or a symbolic link
        to an image or a folder is broken (never skipped silently).
    ValueError
        No client folders, a client in ``clients`` without a folder, no images at all, a client
        with no training images, a valid/test class folder unknown to every train split
        ("mismatched classes") or a class folder not in ``class_names``, class names that differ
        only by case, a client sharing no class with the others, a class with no training image in
        any client, or an unreadable image.
    """
    root = Path(root)
    extensions = tuple(e.lower() for e in extensions)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist; expected <root>/<client>/<split>/<class>/")
    client_dirs = _subdirs(root)
    if not client_dirs:
        raise ValueError(f"no client folders in {root}; expected <root>/<client>/<split>/<class>/<images>")
    selected = select_clients("image_folder", [d.name for d in client_dirs], clients, where=f"in {root}")
    client_dirs = [d for d in client_dirs if d.name in selected]
    for client_dir in client_dirs:
        for split in SPLITS:
            if not (client_dir / split).is_dir():
                raise FileNotFoundError(f"missing split folder {client_dir / split}; create it (it may be empty)")

    given = name_list(class_names, "class_names", "image_folder")
    class_names = list(given) if given else _check_class_names(root, client_dirs)
    if given is None and clients is not None:
        logger.warning("image_folder: class names %s read from the folders of %s only; give class_names so labels "
                       "are numbered as in the whole federation", class_names, ", ".join(selected))
    n_images = 0
    for client_dir in client_dirs:
        for split in SPLITS:
            for class_dir in _subdirs(client_dir / split):
                if given and class_dir.name not in given:
                    raise ValueError(f"{class_dir} is class {class_dir.name!r}, which is not in class_names "
                                     f"{list(given)}; add it to class_names or remove the folder")
                if class_dir.name not in class_names:
                    raise ValueError(
                        f"mismatched classes: {class_dir} is class {class_dir.name!r}, which no client's train "
                        f"split has (train classes: {class_names}); rename or remove the folder"
                    )
                n_images += len(_image_files(class_dir, extensions))
    if n_images == 0:
        raise ValueError(f"no images with extensions {extensions} found under {root}")
    for client_dir in client_dirs:
        if not any(_image_files(d, extensions) for d in _subdirs(client_dir / "train")):
            raise ValueError(f"empty client: {client_dir / 'train'} has no images; add training images or remove "
                             f"the client folder")
    trained = {d.name for c in client_dirs for d in _subdirs(c / "train") if _image_files(d, extensions)}
    absent = [n for n in class_names if n not in trained]
    if absent and (clients is not None or given):
        # a hospital's own copy may lack a class; a declared label list may be wider than these folders
        logger.warning("image_folder: class(es) %s have no training image in %s", absent, ", ".join(selected))
    elif absent:  # as the dermoscopy layouts (Manifest.validate)
        raise ValueError(f"{root}: class(es) {absent} have no training image in any client (empty train/<class> "
                         "folders); the model could never learn them - add images or remove those folders")

    clients = []
    for client_dir in client_dirs:
        parts = {s: _load_split(client_dir / s, class_names, image_size, extensions) for s in SPLITS}
        clients.append(ClientData(client_dir.name, **parts))
    logger.info("loaded %d images of %d clients, classes %s from %s", n_images, len(clients), class_names, root)
    return Federation(root.name or "image_folder", tuple(class_names), tuple(clients))


def describe(options: Mapping[str, Any]) -> Optional[FederationInfo]:
    """The shape of an ``image_folder`` federation when the options give both ``clients`` and
    ``class_names`` (clients sorted, as the folders are read); else None (only the folders tell)."""
    clients = name_list(options["clients"], "clients", "image_folder")
    class_names = name_list(options["class_names"], "class_names", "image_folder")
    if clients is None or class_names is None:
        return None
    name = Path(options["root"]).name if options["root"] is not None else ""
    return FederationInfo(name or "image_folder", "classification", class_names, tuple(sorted(clients)))


@register_dataset("image_folder", describe=describe)
def build(*, seed: int, image_size: int, root: Optional[Union[str, Path]] = None,
          extensions: Sequence[str] = DEFAULT_EXTENSIONS, clients: Optional[Sequence[str]] = None,
          class_names: Optional[Sequence[str]] = None) -> Federation:
    """Registry factory for :func:`load_image_folder_federation`; ``seed`` is unused (splits are on disk)."""
    if root is None:
        raise ValueError("dataset 'image_folder' needs the option root=<folder with one sub-folder per client>")
    return load_image_folder_federation(root, image_size=image_size, extensions=extensions, clients=clients,
                                        class_names=class_names)

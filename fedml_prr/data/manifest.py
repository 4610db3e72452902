"""Datasets on disk as *manifests*: which image file is which client, split and label.

Reading a layout (:mod:`fedml_prr.data.dermoscopy`) only parses its CSV files and checks that
every listed image exists; it yields a :class:`Manifest`.  Decoding the images is a separate,
slow step (:func:`~fedml_prr.data.images.decode_images`), done once into a cache
(:mod:`fedml_prr.data.cache`) or at every run (:func:`federation_from_manifest`).  Both paths
give identical tensors.

Also here: the seeded, lesion-grouped, class-stratified split (:func:`grouped_stratified_split`)
and its split file (:mod:`fedml_prr.data.split_file`, rows ``image_id,client,split,label,
lesion_id``) that stores a drawn split so it is reused, not re-drawn.

Pure numpy / PIL / torch; nothing here imports ``fedml``.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from fedml_prr.data.federation import SPLITS, Federation
from fedml_prr.data.images import decode_images
from fedml_prr.data.store import assemble_federation
from fedml_prr.data.split_file import (  # noqa: F401  (read_csv_rows: the layouts import it from here)
    REDRAW_HINT,
    assign_splits,
    read_csv_rows,
    read_split_file,
    write_split_file,
)

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]

#: Fractions (train, valid, test) of a lesion-aware re-split, the PRR reference's ~70/10/20.
RESPLIT_FRACTIONS = (0.7, 0.1, 0.2)


@dataclass(frozen=True)
class Record:
    """One image of a manifest.

    Attributes
    ----------
    image_id:
        The layout's image identifier (file name without extension); unique per dataset.
    path:
        The image file.
    client:
        Name of the client (hospital) holding the image.
    split:
        ``train``, ``valid`` or ``test``.
    label:
        Class index into :attr:`Manifest.class_names`.
    lesion_id:
        Images of one lesion share it; an image without one is its own lesion.
    """

    image_id: str
    path: Path
    client: str
    split: str
    label: int
    lesion_id: str


@dataclass(frozen=True)
class Manifest:
    """A dataset on disk: its records in client order, then split order, then file order.

    Attributes
    ----------
    dataset:
        Registered dataset name.
    root:
        Folder the layout was read from.
    class_names, clients:
        Label ``i`` means ``class_names[i]``; the clients read, in silo order.
    records:
        Every image; :meth:`ordered` sorts them by (client, split), keeping file order within.
    options:
        The layout options it was read with, defaults filled in (JSON values).
    label_file:
        The file the labels came from, named by errors about the labels.
    layout_clients:
        Every client of the layout (the federation's silos), when :attr:`clients` are some of
        them (option ``clients``); empty: the same as :attr:`clients`.
    """

    dataset: str
    root: Path
    class_names: Tuple[str, ...]
    clients: Tuple[str, ...]
    records: Tuple[Record, ...]
    options: Dict[str, Any] = field(default_factory=dict)
    label_file: Optional[Path] = None
    layout_clients: Tuple[str, ...] = ()

    @property
    def all_clients(self) -> Tuple[str, ...]:
        """Every client of the layout: a client's position here seeds its splits."""
        return self.layout_clients or self.clients

    @property
    def restricted(self) -> bool:
        """True when only some of the layout's clients were read."""
        return self.all_clients != self.clients

    def ordered(self) -> "Manifest":
        """The same manifest with records grouped by client (silo order) then split."""
        client_index = {c: i for i, c in enumerate(self.clients)}
        split_index = {s: i for i, s in enumerate(SPLITS)}
        keyed = sorted(range(len(self.records)),
                       key=lambda i: (client_index[self.records[i].client], split_index[self.records[i].split], i))
        return replace(self, records=tuple(self.records[i] for i in keyed))

    def counts(self) -> Dict[str, Dict[str, List[int]]]:
        """``client -> split -> per-class image counts``, computed from the records."""
        out = {c: {s: [0] * len(self.class_names) for s in SPLITS} for c in self.clients}
        for r in self.records:
            out[r.client][r.split][r.label] += 1
        return out

    def validate(self) -> None:
        """Raise ``ValueError`` (naming :attr:`label_file`) for an empty client or, when every
        client was read, a class without a training image."""
        where = self.label_file or self.root
        known = set(self.clients)
        ids = Counter(r.image_id for r in self.records)
        duplicated = sorted(i for i, n in ids.items() if n > 1)
        if duplicated:
            raise ValueError(f"{where}: image(s) {duplicated[:5]} listed more than once; each image belongs to "
                             "exactly one client and split")
        for r in self.records:
            if r.client not in known or r.split not in SPLITS or not 0 <= r.label < len(self.class_names):
                raise ValueError(f"{where}: image {r.image_id} has client {r.client!r}, split {r.split!r}, "
                                 f"label {r.label}; expected one of {self.clients}, {SPLITS}, "
                                 f"[0, {len(self.class_names)})")
        counts = self.counts()
        for client in self.clients:
            if sum(counts[client]["train"]) == 0:
                raise ValueError(f"{where}: client {client!r} has no training images; add some or drop the client")
        if self.restricted:  # the other clients may hold the classes these lack
            return
        train_total = np.sum([counts[c]["train"] for c in self.clients], axis=0)
        absent = [self.class_names[i] for i in range(len(self.class_names)) if train_total[i] == 0]
        if absent:
            raise ValueError(f"{where}: class(es) {absent} have no training image in any client; the model "
                             "could never learn them - fix the labels or restrict the classes")


# ----------------------------------------------------------------------------------- CSV files
def require_dir(path: Path, what: str) -> Path:
    """``path`` if it is a folder, else ``FileNotFoundError`` saying what it should hold."""
    if not path.is_dir():
        raise FileNotFoundError(f"missing folder {path}; {what}")
    return path


def parse_label(value: str, allowed: Mapping[str, int], path: Path, line: int, column: str) -> int:
    """``allowed[value]`` or a ``ValueError`` naming the file, line and the accepted values."""
    if value not in allowed:
        raise ValueError(f"{path} line {line}: unknown {column} {value!r}; expected one of {sorted(allowed)}")
    return allowed[value]


def check_images_exist(records: Iterable[Record], listed_in: Path) -> None:
    """``FileNotFoundError`` naming the first missing image and the file that lists it."""
    for r in records:
        if not r.path.is_file():
            raise FileNotFoundError(f"missing image {r.path} (image {r.image_id!r} listed in {listed_in}); "
                                    "restore the file or remove its row (a copy holding some clients' images only: "
                                    "build those with the dataset option clients: [...])")


# ------------------------------------------------------------------------------------ splitting
def grouped_stratified_split(labels: Sequence[int], groups: Sequence[str], fractions: Sequence[float],
                             rng: np.random.Generator) -> np.ndarray:
    """Assign each sample to a part so that no group spans two parts, stratified by class.

    Each group takes the most frequent label of its samples (ties: the smallest). Per class, the
    groups are shuffled with ``rng`` and laid end to end; a group goes to the part whose
    cumulative fraction interval holds the midpoint of its samples, so each class is cut close
    to ``fractions`` even with few samples.

    Returns
    -------
    ``int64 [N]``: the part index of each sample (``0 .. len(fractions) - 1``).
    """
    if len(labels) != len(groups):
        raise ValueError(f"{len(labels)} labels but {len(groups)} groups")
    fractions = np.asarray(fractions, dtype=np.float64)
    if fractions.min() < 0 or not np.isclose(fractions.sum(), 1.0):
        raise ValueError(f"fractions must be >= 0 and sum to 1, got {fractions.tolist()}")
    members: Dict[str, List[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    group_names = list(members)  # first-appearance order: deterministic
    group_label = {}
    for g in group_names:
        votes = Counter(int(labels[i]) for i in members[g])
        group_label[g] = min(votes, key=lambda c: (-votes[c], c))
    bounds = np.cumsum(fractions)
    part = np.zeros(len(labels), dtype=np.int64)
    for c in sorted(set(group_label.values())):
        names = [g for g in group_names if group_label[g] == c]
        names = [names[i] for i in rng.permutation(len(names))]
        sizes = np.array([len(members[g]) for g in names], dtype=np.float64)
        total, start = sizes.sum(), 0.0
        for g, size in zip(names, sizes):
            mid = (start + size / 2) / total
            part[members[g]] = min(int(np.searchsorted(bounds, mid, side="right")), len(fractions) - 1)
            start += size
    return part


def client_rng(split_seed: int, client_index: int) -> np.random.Generator:
    """The split generator of one client: independent of the other clients and of the run seed."""
    return np.random.default_rng([int(split_seed), int(client_index)])


def lesion_resplit(records: Sequence[Record], clients: Sequence[str], split_seed: int,
                   fractions: Sequence[float] = RESPLIT_FRACTIONS) -> List[Record]:
    """Re-split each client's images into train/valid/test by lesion (no lesion in two splits).

    ``clients`` are every client of the layout: client ``k`` draws from :func:`client_rng`
    ``(split_seed, k)``, so its split does not depend on which other clients have records.
    """
    out = list(records)
    for k, client in enumerate(clients):
        idx = [i for i, r in enumerate(records) if r.client == client]
        if not idx:
            continue
        parts = grouped_stratified_split([records[i].label for i in idx], [records[i].lesion_id for i in idx],
                                         fractions, client_rng(split_seed, k))
        for i, p in zip(idx, parts):
            out[i] = replace(records[i], split=SPLITS[p])
    return out


def carve_valid(records: Sequence[Record], clients: Sequence[str], split_seed: int,
                valid_fraction: float) -> List[Record]:
    """Move a seeded, class-stratified ``valid_fraction`` of each client's train images to valid
    (``clients``: every client of the layout, seeded by position as in :func:`lesion_resplit`)."""
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    out = list(records)
    for k, client in enumerate(clients):
        idx = [i for i, r in enumerate(records) if r.client == client and r.split == "train"]
        if not idx:
            continue
        parts = grouped_stratified_split([records[i].label for i in idx], [records[i].image_id for i in idx],
                                         (1.0 - valid_fraction, valid_fraction), client_rng(split_seed, k))
        for i, p in zip(idx, parts):
            if p == 1:
                out[i] = replace(records[i], split="valid")
    return out


#: Extra columns of a dermoscopy split file, after ``image_id,client,split``.
SPLIT_EXTRA_COLUMNS = ("label", "lesion_id")


def split_rows(manifest: Manifest) -> List[Tuple[str, str, str, str, str]]:
    """``(image_id, client, split, class name, lesion_id)`` of every record, clients then splits in order."""
    return [(r.image_id, r.client, r.split, manifest.class_names[r.label], r.lesion_id)
            for r in manifest.ordered().records]


def apply_split_file(path: PathLike, records: Sequence[Record], *, other_clients: Sequence[str] = ()) -> List[Record]:
    """Records with the splits of a split file; it must list exactly these images and clients
    (its rows of ``other_clients``, the layout's clients not read, are ignored)."""
    rows = [r for r in read_split_file(path, item_column="image_id") if r.client not in other_clients]
    repeated = [item for item, n in Counter(r.item for r in rows).items() if n > 1]
    if repeated:
        raise ValueError(f"split file {path}: image {repeated[0]!r} is listed twice; {REDRAW_HINT}")
    splits = assign_splits(rows, [(r.client, r.image_id) for r in records], path, noun="image")
    return [replace(r, split=splits[(r.client, r.image_id)]) for r in records]


def use_split_file(manifest: Manifest, split_file: Optional[PathLike]) -> Manifest:
    """Apply ``split_file`` if it exists, else write the manifest's split there (None: nothing)."""
    if split_file is None:
        return manifest
    path = Path(split_file)
    if path.is_file():
        logger.info("%s: splits read from %s", manifest.dataset, path)
        others = [c for c in manifest.all_clients if c not in manifest.clients]
        return replace(manifest, records=tuple(apply_split_file(path, manifest.records, other_clients=others)))
    write_split_file(path, split_rows(manifest), item_column="image_id", extra_columns=SPLIT_EXTRA_COLUMNS)
    logger.info("%s: split written to %s", manifest.dataset, path)
    return manifest


def split_ranges(manifest: Manifest) -> List[Dict[str, Tuple[int, int]]]:
    """Per client (silo order), ``split -> (start, stop)`` rows of the ordered manifest."""
    ordered = manifest.ordered().records
    ranges, position = [], 0
    for client in manifest.clients:
        spans = {}
        for split in SPLITS:
            n = sum(1 for r in ordered if r.client == client and r.split == split)
            spans[split] = (position, position + n)
            position += n
        ranges.append(spans)
    return ranges


def federation_from_manifest(manifest: Manifest, image_size: int, *, workers: Optional[int] = None,
                             progress: Optional[Callable[[int], None]] = None) -> Federation:
    """Decode every image of ``manifest`` into memory (no cache) and build the federation."""
    manifest = manifest.ordered()
    paths = [r.path for r in manifest.records]
    images = decode_images(paths, image_size, np.empty((len(paths), 3, image_size, image_size), dtype=np.uint8),
                           workers=workers, progress=progress)
    labels = torch.tensor([r.label for r in manifest.records], dtype=torch.int64)
    return assemble_federation(manifest.dataset, manifest.class_names, manifest.clients, split_ranges(manifest),
                               torch.from_numpy(images), labels)

"""``isic2019`` (FLamby Fed-ISIC2019, 6 centers x 8 classes) and ``derm_prr3`` (its PRR view).

Layout (DATASETS.md section B; a FLamby copy)::

    <root>/ISIC_2019_Training_Input_preprocessed/<image>.jpg   (shorter side 224, colour constancy)
    <root>/ISIC_2019_Training_Metadata.csv                     (image, ..., lesion_id: split: lesion only)
    <root>/train_test_split    FLamby's split file (flamby/datasets/fed_isic2019/dataset_creation_scripts/);
                               another place with the option split_csv

Labels, centers and folds come from the split file, as in FLamby: columns ``image``, ``target``
(index into MEL, NV, BCC, AK, BKL, DF, VASC, SCC), ``center`` (0..5) and ``fold`` (train/test);
``ISIC_2019_Training_GroundTruth.csv`` is not needed.

FLamby has no validation split, and our runtime selects models on one: with ``split:
reference``, a seeded class-stratified ``valid_fraction`` of each center's train images becomes
its valid split (the test split stays FLamby's).  ``split: lesion`` instead re-splits each
center 70/10/20 by ``lesion_id`` (images without one are their own lesion).

``derm_prr3`` keeps centers 2, 1, 3 (HAM vidir_modern, vidir_molemax, rosendahl) as PRR clients
A, B, C and the classes NV, BKL, MEL as nv=0, bkl=1, mel=2: the paper's clients A-C for users
without the ISIC 2017 folder.

A hospital's copy (option ``clients: [center]``, for ``derm_prr3`` ``[A]`` etc.) holds the split
file (its own rows suffice), for ``split: lesion`` the metadata CSV, and its own images.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from fedml_prr.data.dermoscopy.common import check_split_mode, finish, int_text
from fedml_prr.data.dermoscopy.constants import (
    ISIC2019_CENTERS,
    ISIC2019_CLASS_NAMES,
    ISIC2019_IMAGE_FOLDER,
    ISIC2019_METADATA,
    ISIC2019_SPLIT_CSV,
    PRR3_CENTERS,
    PRR3_CLASSES,
    PRR_CLASS_NAMES,
)
from fedml_prr.data.layout import register_layout
from fedml_prr.data.manifest import (
    Manifest,
    Record,
    carve_valid,
    check_images_exist,
    parse_label,
    read_csv_rows,
    require_dir,
)

SPLIT_HINT = ("copy FLamby's flamby/datasets/fed_isic2019/dataset_creation_scripts/train_test_split into the root "
              "or give its path with the option split_csv")


def _lesion_ids(root: Path, required: bool) -> Dict[str, str]:
    path = root / ISIC2019_METADATA
    if not path.is_file() and not required:
        return {}
    rows = read_csv_rows(path, ("image", "lesion_id"), what="split: lesion needs its lesion_id column")
    return {row["image"]: row["lesion_id"] for row in rows if row["lesion_id"]}


def read_isic_records(root: Path, split_csv: Optional[str], *, need_lesions: bool,
                      centers: Sequence[str] = ISIC2019_CENTERS) -> tuple[List[Record], Path]:
    """Every image of ``centers`` in the FLamby split file as a record (client = center name,
    split = fold); rows of other centers are skipped, their images need not exist."""
    require_dir(root, "the Fed-ISIC2019 root (a FLamby copy); see docs/datasets.md")
    split_path = Path(split_csv) if split_csv is not None else root / ISIC2019_SPLIT_CSV
    rows = read_csv_rows(split_path, ("image", "target", "center", "fold"), what=SPLIT_HINT)
    image_dir = require_dir(root / ISIC2019_IMAGE_FOLDER, "expected the preprocessed FLamby images <image>.jpg there")
    lesions = _lesion_ids(root, need_lesions)
    targets = {str(i): i for i in range(len(ISIC2019_CLASS_NAMES))}
    center_index = {str(i): i for i in range(len(ISIC2019_CENTERS))}
    folds = {"train": 0, "test": 1}
    records = []
    for line, row in enumerate(rows, start=2):
        center = parse_label(int_text(row["center"]), center_index, split_path, line, "center")
        if ISIC2019_CENTERS[center] not in centers:
            continue
        target = parse_label(int_text(row["target"]), targets, split_path, line, "target")
        parse_label(row["fold"], folds, split_path, line, "fold")
        image = row["image"]
        records.append(Record(image_id=image, path=image_dir / f"{image}.jpg", client=ISIC2019_CENTERS[center],
                              split=row["fold"], label=target, lesion_id=lesions.get(image, image)))
    check_images_exist(records, split_path)
    return records, split_path


def _finish(manifest: Manifest, *, split: str, split_seed: int, valid_fraction: float,
            split_file: Optional[str]) -> Manifest:
    if split == "reference":
        manifest = replace(manifest, records=tuple(carve_valid(manifest.records, manifest.all_clients, split_seed,
                                                               valid_fraction)))
    return finish(manifest, split=split, split_seed=split_seed, split_file=split_file)


@register_layout("isic2019", clients=ISIC2019_CENTERS, class_names=ISIC2019_CLASS_NAMES)
def read_isic2019(root: Path, *, clients: Sequence[str] = ISIC2019_CENTERS, split: str = "reference",
                  split_seed: int = 0, valid_fraction: float = 0.1, split_file: Optional[str] = None,
                  split_csv: Optional[str] = None) -> Manifest:
    """Read a FLamby Fed-ISIC2019 copy: 6 centers (silo order 0..5), 8 classes.

    Parameters
    ----------
    clients:
        The centers to read (layout order); the split file may hold only their rows, the image
        folder only their images.
    split:
        ``reference`` (FLamby's train/test; valid carved from train) or ``lesion``.
    split_seed:
        Seed of the valid carving / lesion re-split (independent of the run's seed).
    valid_fraction:
        Share of each center's FLamby train images moved to valid (``reference`` only).
    split_file:
        A CSV ``image_id,client,split``: used if it exists, else the split is written there.
    split_csv:
        FLamby's ``train_test_split`` if not in ``root``.
    """
    check_split_mode(split, "isic2019")
    records, split_path = read_isic_records(root, split_csv, need_lesions=split == "lesion", centers=clients)
    manifest = Manifest("isic2019", root, ISIC2019_CLASS_NAMES, tuple(clients), tuple(records),
                        label_file=split_path, layout_clients=ISIC2019_CENTERS)
    return _finish(manifest, split=split, split_seed=split_seed, valid_fraction=valid_fraction,
                   split_file=split_file)


@register_layout("derm_prr3", clients=tuple(PRR3_CENTERS), class_names=PRR_CLASS_NAMES)
def read_prr3(root: Path, *, clients: Sequence[str] = tuple(PRR3_CENTERS), split: str = "reference",
              split_seed: int = 0, valid_fraction: float = 0.1, split_file: Optional[str] = None,
              split_csv: Optional[str] = None) -> Manifest:
    """PRR clients A, B, C (nv/bkl/mel) from a FLamby Fed-ISIC2019 copy; options as :func:`read_isic2019`."""
    check_split_mode(split, "derm_prr3")
    records, split_path = read_isic_records(root, split_csv, need_lesions=split == "lesion",
                                            centers=[ISIC2019_CENTERS[PRR3_CENTERS[c]] for c in clients])
    client_of = {ISIC2019_CENTERS[center]: client for client, center in PRR3_CENTERS.items()}
    label_of = {ISIC2019_CLASS_NAMES.index(name): label for name, label in PRR3_CLASSES.items()}
    kept = tuple(replace(r, client=client_of[r.client], label=label_of[r.label]) for r in records
                 if r.client in client_of and r.label in label_of)
    manifest = Manifest("derm_prr3", root, PRR_CLASS_NAMES, tuple(clients), kept, label_file=split_path,
                        layout_clients=tuple(PRR3_CENTERS))
    return _finish(manifest, split=split, split_seed=split_seed, valid_fraction=valid_fraction,
                   split_file=split_file)

"""``ham10000``: HAM10000 as distributed, its 4 sources as clients (DATASETS.md section C).

Layout::

    <root>/HAM10000_metadata.csv     lesion_id,image_id,dx,dx_type,age,sex,localization,dataset
    <root>/HAM10000_images_part_1/<image_id>.jpg   and  <root>/HAM10000_images_part_2/<image_id>.jpg

Clients (silo order): vidir_modern, vidir_molemax, rosendahl, vienna_dias (the ``dataset``
column).  Classes: ``dx`` in the ISIC 2018 order mel, nv, bcc, akiec, bkl, df, vasc, or the
subset and order given by the option ``classes`` (images of other classes are dropped;
``classes: [nv, bkl, mel]`` gives PRR's label order).  HAM10000 ships no split: each client is
split 70/10/20 by ``lesion_id`` (no lesion in two splits), seeded by ``split_seed`` and the
source's position above.  A hospital's copy (option ``clients: [source]``) holds the metadata CSV
(its own rows suffice) and its own images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from fedml_prr.data.dermoscopy.common import check_split_mode, finish
from fedml_prr.data.dermoscopy.constants import HAM_CLASS_NAMES, HAM_IMAGE_FOLDERS, HAM_METADATA, HAM_SOURCES
from fedml_prr.data.layout import register_layout
from fedml_prr.data.manifest import Manifest, Record, parse_label, read_csv_rows


def _image_files(root: Path) -> Dict[str, Path]:
    folders = [root / name for name in HAM_IMAGE_FOLDERS if (root / name).is_dir()]
    if not folders:
        raise FileNotFoundError(f"missing folders {root / HAM_IMAGE_FOLDERS[0]} and {root / HAM_IMAGE_FOLDERS[1]}; "
                                "unpack the HAM10000 image archives into the root")
    files: Dict[str, Path] = {}
    for folder in folders:
        for path in folder.iterdir():
            if path.suffix.lower() == ".jpg":
                files.setdefault(path.stem, path)
    return files


def class_names_of(options: Mapping[str, Any]) -> Tuple[str, ...]:
    """The classes of ``ham10000`` with the reader options: ``classes``, checked, or all seven."""
    classes = options.get("classes")
    class_names = tuple(classes) if classes is not None else HAM_CLASS_NAMES
    unknown = [c for c in class_names if c not in HAM_CLASS_NAMES]
    if unknown or not class_names or len(set(class_names)) != len(class_names):
        raise ValueError(f"dataset 'ham10000': classes must be distinct names among {list(HAM_CLASS_NAMES)}, "
                         f"got {list(class_names)}")
    return class_names


@register_layout("ham10000", clients=HAM_SOURCES, class_names=class_names_of)
def read_ham10000(root: Path, *, clients: Sequence[str] = HAM_SOURCES, classes: Optional[List[str]] = None,
                  split: str = "lesion", split_seed: int = 0, split_file: Optional[str] = None) -> Manifest:
    """Read HAM10000 from its metadata CSV and image folders.

    Parameters
    ----------
    clients:
        The sources to read (layout order); the CSV may hold only their rows, the image folders
        only their images.
    classes:
        Class names to keep, in label order (default: all seven, ISIC 2018 order).
    split:
        Only ``lesion`` (HAM10000 has no reference split).
    split_seed:
        Seed of the lesion-aware split (independent of the run's seed).
    split_file:
        A CSV ``image_id,client,split``: used if it exists, else the split is written there.
    """
    check_split_mode(split, "ham10000", allowed=("lesion",))
    class_names = class_names_of({"classes": classes})
    if not root.is_dir():
        raise FileNotFoundError(f"missing folder {root}; the HAM10000 root holds {HAM_METADATA} and "
                                f"{HAM_IMAGE_FOLDERS[0]}/, {HAM_IMAGE_FOLDERS[1]}/")
    metadata = root / HAM_METADATA
    rows = read_csv_rows(metadata, ("lesion_id", "image_id", "dx", "dataset"), what="the HAM10000 metadata")
    files = _image_files(root)
    dx_index = {name: i for i, name in enumerate(HAM_CLASS_NAMES)}
    sources = {name: i for i, name in enumerate(HAM_SOURCES)}
    records = []
    for line, row in enumerate(rows, start=2):
        source = HAM_SOURCES[parse_label(row["dataset"], sources, metadata, line, "dataset (source)")]
        if source not in clients:
            continue
        dx = HAM_CLASS_NAMES[parse_label(row["dx"], dx_index, metadata, line, "dx")]
        if dx not in class_names:
            continue
        image_id = row["image_id"]
        if image_id not in files:
            folders = " and ".join(str(root / f) for f in HAM_IMAGE_FOLDERS)
            raise FileNotFoundError(f"missing image {image_id}.jpg (listed in {metadata} line {line}) in {folders}; "
                                    "restore it (a copy holding some sources' images only: build those with the "
                                    "dataset option clients: [...])")
        records.append(Record(image_id=image_id, path=files[image_id], client=source, split="train",
                              label=class_names.index(dx), lesion_id=row["lesion_id"] or image_id))
    manifest = Manifest("ham10000", root, class_names, tuple(clients), tuple(records), label_file=metadata,
                        layout_clients=HAM_SOURCES)
    return finish(manifest, split=split, split_seed=split_seed, split_file=split_file)

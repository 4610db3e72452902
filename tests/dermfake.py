"""Tiny fake copies of the dermoscopy layouts (DATASETS.md A-C), real file and column names.

Every image is one flat colour that encodes its class (:func:`colour`), so a test can check a
label from the pixels after decoding and resizing.
"""

import csv
from pathlib import Path

from PIL import Image


def colour(label: int) -> tuple:
    """A distinct flat RGB colour per class index (survives JPEG and resizing)."""
    return ((40 + 70 * label) % 256, (200 - 50 * label) % 256, (30 * label * label + 20) % 256)


def write_image(path: Path, label: int, size=(10, 8)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour(label)).save(path)


def write_csv(path: Path, header, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


# ------------------------------------------------------------------------ A. PRR CSV layout
#: client -> split -> labels; A's lesions L0..L2 span train and test (the reference leak).
PRR4_LABELS = {
    "A": {"train": [0, 0, 1, 2, 2, 0], "valid": [0, 1], "test": [2, 0, 1]},
    "B": {"train": [0, 0, 0, 0, 1, 2], "valid": [0], "test": [0, 0]},
    "C": {"train": [1, 1, 2, 0], "valid": [2], "test": [1, 0]},
    "D": {"train": [0, 1, 2, 0, 0], "valid": [0], "test": [2]},
}


def make_prr4(root: Path, labels=PRR4_LABELS) -> Path:
    """``<root>/client<X>/img_resize128/*.png`` and ``<root>/csv_folder/client<X>/<split>_client<X>.csv``."""
    for client, splits in labels.items():
        for split, values in splits.items():
            rows = []
            for i, label in enumerate(values):
                image_id = f"{client}_{split}_{i}"
                lesion = f"L{i % 3}" if client == "A" else f"{client}{split}{i}"
                write_image(root / f"client{client}" / "img_resize128" / f"{image_id}.png", label)
                rows.append([image_id, label, int(label == 2), lesion, "extra"])
            write_csv(root / "csv_folder" / f"client{client}" / f"{split}_client{client}.csv",
                      ["image_id", "label", "label_binary", "lesion_id", "dx_type"], rows)
    return root


# ------------------------------------------------------------------- B. FLamby Fed-ISIC2019
ISIC_COLUMNS = ["image", "MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK", "target", "center", "fold",
                "fold2"]
#: center -> fold -> targets (0 MEL, 1 NV, 4 BKL, ...); center 0 has every class in train.
ISIC_TARGETS = {
    0: {"train": [0, 1, 2, 3, 4, 5, 6, 7, 1], "test": [1, 2]},
    1: {"train": [1, 1, 1, 1, 4, 4, 0, 0, 2, 1], "test": [1, 4, 3]},
    2: {"train": [1, 1, 1, 4, 4, 4, 0, 0, 0, 5], "test": [0, 1]},
    3: {"train": [1, 1, 4, 4, 0, 0, 0, 1, 6], "test": [4, 1]},
    4: {"train": [0, 1, 2], "test": [1]},
    5: {"train": [1, 4], "test": [0]},
}


def make_isic2019(root: Path, targets=ISIC_TARGETS) -> Path:
    """Preprocessed JPGs, FLamby's ``train_test_split`` and the metadata CSV (with lesion ids)."""
    split_rows, meta_rows = [], []
    for center, folds in targets.items():
        for fold, values in folds.items():
            for i, target in enumerate(values):
                image = f"ISIC_{center}{fold[:2]}{i:03d}"
                write_image(root / "ISIC_2019_Training_Input_preprocessed" / f"{image}.jpg", target, size=(12, 9))
                onehot = [float(target == k) for k in range(8)] + [0.0]
                split_rows.append([image, *onehot, target, center, fold, fold])
                meta_rows.append([image, 55, "torso", f"IL_{center}_{i % 4}" if i % 5 else "", "male"])
    write_csv(root / "train_test_split", ISIC_COLUMNS, split_rows)
    write_csv(root / "ISIC_2019_Training_Metadata.csv", ["image", "age_approx", "anatom_site_general", "lesion_id",
                                                         "sex"], meta_rows)
    write_csv(root / "ISIC_2019_Training_GroundTruth.csv", ["image", *ISIC_COLUMNS[1:10]],
              [r[:10] for r in split_rows])
    return root


# --------------------------------------------------------------------------- C. HAM10000
HAM_COLUMNS = ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization", "dataset"]
#: source -> dx of each image; consecutive pairs share a lesion.
HAM_DX = {
    "vidir_modern": ["nv", "nv", "bkl", "mel", "mel", "nv", "bcc", "nv", "bkl", "nv", "mel", "akiec"],
    "rosendahl": ["bkl", "bkl", "mel", "nv", "akiec", "bcc", "nv", "nv"],
    "vidir_molemax": ["nv", "nv", "nv", "nv", "bkl", "mel", "df", "vasc", "nv", "nv"],
    "vienna_dias": ["nv", "mel", "bkl", "nv", "nv", "mel"],
}
HAM_CLASSES = ("mel", "nv", "bcc", "akiec", "bkl", "df", "vasc")


def make_ham10000(root: Path, dx=HAM_DX) -> Path:
    """``HAM10000_metadata.csv`` (rows interleaved across sources) and images in two part folders."""
    rows = []
    for k, (source, values) in enumerate(dx.items()):
        for i, d in enumerate(values):
            image_id = f"ISIC_{k}{i:06d}"
            part = 1 + i % 2
            write_image(root / f"HAM10000_images_part_{part}" / f"{image_id}.jpg", HAM_CLASSES.index(d), size=(12, 9))
            rows.append([f"HAM_{k}{i // 2:06d}", image_id, d, "histo", 50, "female", "back", source])
    rows = rows[::2] + rows[1::2]  # sources interleaved, as in the real file
    write_csv(root / "HAM10000_metadata.csv", HAM_COLUMNS, rows)
    return root

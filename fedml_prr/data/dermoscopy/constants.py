"""Constants of the dermoscopy layouts (DATASETS.md sections A-C): clients, classes, files.

The published counts are for documentation and for checking a real copy; the loaders never use
them - every count a run sees is computed from the files.
"""

from __future__ import annotations

from fedml_prr.data.synthetic_derm import PRR_CLASS_COUNTS

#: Split modes: ``reference`` = the layout's own split, ``lesion`` = seeded lesion-aware re-split.
SPLIT_MODES = ("reference", "lesion")

# --- A. the PRR 4-client CSV layout -------------------------------------------------------------
PRR_CLASS_NAMES = ("nv", "bkl", "mel")
PRR_CLIENTS = ("A", "B", "C", "D")
PRR_IMAGE_FOLDER = "img_resize128"
PRR_CSV_FOLDER = "csv_folder"
#: (nv, bkl, mel) per client and split, as published with the PRR split (DATASETS.md A).
PRR4_PUBLISHED_COUNTS = PRR_CLASS_COUNTS

# --- B. FLamby Fed-ISIC2019 -------------------------------------------------------------------
ISIC2019_CLASS_NAMES = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC")
ISIC2019_CENTERS = ("BCN", "HAM_vidir_molemax", "HAM_vidir_modern", "HAM_rosendahl", "MSK", "HAM_vienna_dias")
ISIC2019_IMAGE_FOLDER = "ISIC_2019_Training_Input_preprocessed"
ISIC2019_METADATA = "ISIC_2019_Training_Metadata.csv"
ISIC2019_SPLIT_CSV = "train_test_split"
#: (train, test) images per center in FLamby's split (DATASETS.md B).
ISIC2019_PUBLISHED_SIZES = {"BCN": (9930, 2483), "HAM_vidir_molemax": (3163, 791), "HAM_vidir_modern": (2691, 672),
                            "HAM_rosendahl": (1807, 452), "MSK": (655, 164), "HAM_vienna_dias": (351, 88)}
#: ``derm_prr3``: PRR client -> FLamby center index (A = vidir_modern, B = vidir_molemax, C = rosendahl).
PRR3_CENTERS = {"A": 2, "B": 1, "C": 3}
#: ``derm_prr3``: FLamby class -> PRR label (the other five classes are dropped).
PRR3_CLASSES = {"NV": 0, "BKL": 1, "MEL": 2}

# --- C. HAM10000 ------------------------------------------------------------------------------
#: Default class order: the ISIC 2018 task 3 order (as ISIC 2019's first seven), lower case.
HAM_CLASS_NAMES = ("mel", "nv", "bcc", "akiec", "bkl", "df", "vasc")
#: Clients in this order: PRR's A, B, C, then vienna_dias.
HAM_SOURCES = ("vidir_modern", "vidir_molemax", "rosendahl", "vienna_dias")
HAM_METADATA = "HAM10000_metadata.csv"
HAM_IMAGE_FOLDERS = ("HAM10000_images_part_1", "HAM10000_images_part_2")

"""``derm_prr4``: the PRR paper's 4-client dermoscopy split (DATASETS.md section A).

Layout::

    <root>/clientA/img_resize128/<image_id>.png        (clientA .. clientD)
    <root>/csv_folder/clientA/train_clientA.csv, valid_clientA.csv, test_clientA.csv

A hospital's copy holds its own ``client<X>/`` and ``csv_folder/client<X>/`` (option ``clients: [X]``).
Clients A, B, C = HAM10000 sources vidir_modern, vidir_molemax, rosendahl; D = ISIC 2017 task 3.
CSV columns used: ``image_id`` (``.png`` appended unless present) and ``label`` (0 nv, 1 bkl,
2 mel); ``lesion_id`` when present (for the lesion-aware re-split; an image without one is its
own lesion). Other columns are ignored.

The reference split leaks lesions (one ``lesion_id`` in train and test of A and C); option
``split: lesion`` re-splits each client 70/10/20 by lesion, seeded by ``split_seed``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from fedml_prr.data.dermoscopy.common import check_split_mode, finish, int_text
from fedml_prr.data.dermoscopy.constants import PRR_CLASS_NAMES, PRR_CLIENTS, PRR_CSV_FOLDER, PRR_IMAGE_FOLDER
from fedml_prr.data.federation import SPLITS
from fedml_prr.data.layout import register_layout
from fedml_prr.data.manifest import Manifest, Record, check_images_exist, parse_label, read_csv_rows, require_dir

LAYOUT_HINT = "expected <root>/client<X>/img_resize128/ and <root>/csv_folder/client<X>/<split>_client<X>.csv"


@register_layout("derm_prr4", clients=PRR_CLIENTS, class_names=PRR_CLASS_NAMES)
def read_prr4(root: Path, *, clients: Sequence[str] = PRR_CLIENTS, split: str = "reference", split_seed: int = 0,
              split_file: Optional[str] = None) -> Manifest:
    """Read the PRR CSV layout.

    Parameters
    ----------
    clients:
        The clients to read (layout order); only their folders and CSV files need to exist.
    split:
        ``reference`` (the CSVs' splits) or ``lesion`` (seeded lesion-aware 70/10/20 re-split).
    split_seed:
        Seed of the ``lesion`` re-split (independent of the run's seed).
    split_file:
        A CSV ``image_id,client,split``: used if it exists, else the split is written there.
    """
    check_split_mode(split, "derm_prr4")
    require_dir(root, f"the PRR dermoscopy root; {LAYOUT_HINT}")
    labels = {str(i): i for i in range(len(PRR_CLASS_NAMES))}
    records = []
    for client in clients:
        image_dir = require_dir(root / f"client{client}" / PRR_IMAGE_FOLDER,
                                f"{LAYOUT_HINT} (a copy of some clients only: name them with the option "
                                "clients: [...])")
        for part in SPLITS:
            csv_path = root / PRR_CSV_FOLDER / f"client{client}" / f"{part}_client{client}.csv"
            rows = read_csv_rows(csv_path, ("image_id", "label"), what=LAYOUT_HINT)
            if part == "train" and not rows:
                raise ValueError(f"{csv_path} lists no image: client {client} has no training images")
            found = []
            for line, row in enumerate(rows, start=2):
                image_id = row["image_id"][:-4] if row["image_id"].lower().endswith(".png") else row["image_id"]
                found.append(Record(image_id=image_id, path=image_dir / f"{image_id}.png", client=client, split=part,
                                    label=parse_label(int_text(row["label"]), labels, csv_path, line, "label"),
                                    lesion_id=row.get("lesion_id") or image_id))
            check_images_exist(found, csv_path)
            records.extend(found)
    manifest = Manifest("derm_prr4", root, PRR_CLASS_NAMES, tuple(clients), tuple(records),
                        label_file=root / PRR_CSV_FOLDER, layout_clients=PRR_CLIENTS)
    return finish(manifest, split=split, split_seed=split_seed, split_file=split_file)

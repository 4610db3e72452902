"""The dermoscopy layout readers on tiny fake copies (tests/dermfake.py): clients, classes,
counts, labels, splits, split files, and every error they promise."""

import csv
import shutil
from collections import Counter

import numpy as np
import pytest
import torch
from dermfake import (
    HAM_CLASSES,
    HAM_DX,
    ISIC_TARGETS,
    PRR4_LABELS,
    colour,
    make_ham10000,
    make_isic2019,
    make_prr4,
    write_csv,
)

from fedml_prr.data import DATASETS, build_federation
from fedml_prr.data.dermoscopy.constants import ISIC2019_CENTERS, ISIC2019_CLASS_NAMES
from fedml_prr.data.layout import read_layout
from fedml_prr.data.manifest import grouped_stratified_split


def rows_of(path):
    with path.open() as handle:
        return list(csv.reader(handle))


def rewrite(path, edit):
    """Rewrite CSV ``path`` with ``edit(header, rows) -> (header, rows)``."""
    header, *rows = rows_of(path)
    header, rows = edit(header, rows)
    write_csv(path, header, rows)


def assert_pixels_match_labels(split):
    for image, label in zip(split.images, split.labels):
        assert (image[:, 4, 4].int() - torch.tensor(colour(int(label)))).abs().max() <= 6  # jpg is lossy


def by_client_split(manifest):
    out = {}
    for r in manifest.records:
        out.setdefault(r.client, {}).setdefault(r.split, []).append(r)
    return out


def leaked_lesions(manifest):
    splits_of = {}
    for r in manifest.records:
        splits_of.setdefault((r.client, r.lesion_id), set()).add(r.split)
    return sorted(k for k, v in splits_of.items() if len(v) > 1)


def test_all_layouts_are_registered():
    assert {"derm_prr4", "derm_prr3", "isic2019", "ham10000"} <= set(DATASETS.names())


# ------------------------------------------------------------------------------ A. derm_prr4
def test_prr4_clients_classes_counts_and_labels(tmp_path):
    fed = build_federation("derm_prr4", seed=0, image_size=8, root=make_prr4(tmp_path / "prr"))
    assert [c.name for c in fed.clients] == ["A", "B", "C", "D"]
    assert fed.class_names == ("nv", "bkl", "mel") and fed.image_size == 8
    for client in fed.clients:
        for split in ("train", "valid", "test"):
            part = client.split(split)
            assert part.labels.tolist() == PRR4_LABELS[client.name][split]  # CSV order kept
            assert part.class_counts(3).tolist() == np.bincount(PRR4_LABELS[client.name][split], minlength=3).tolist()
            assert part.images.shape[1:] == (3, 8, 8)
            assert_pixels_match_labels(part)


def test_prr4_lesion_resplit_removes_the_leak_and_is_seeded(tmp_path):
    root = make_prr4(tmp_path / "prr")
    reference = read_layout("derm_prr4", root)
    assert ("A", "L0") in leaked_lesions(reference)  # the reference split leaks, as the real one does
    first = read_layout("derm_prr4", root, split="lesion", split_seed=3)
    assert leaked_lesions(first) == []
    assert read_layout("derm_prr4", root, split="lesion", split_seed=3).records == first.records
    for client in "ABCD":  # same images per client, only the splits change
        assert sorted(r.image_id for r in reference.records if r.client == client) == \
            sorted(r.image_id for r in first.records if r.client == client)
    draws = {tuple(r.split for r in read_layout("derm_prr4", root, split="lesion", split_seed=s).records)
             for s in range(6)}
    assert len(draws) > 1


def test_split_file_is_written_then_reused(tmp_path):
    root = make_prr4(tmp_path / "prr")
    split_file = tmp_path / "splits" / "prr4_lesion.csv"
    drawn = read_layout("derm_prr4", root, split="lesion", split_seed=1, split_file=str(split_file))
    header, *rows = rows_of(split_file)
    assert header[:3] == ["image_id", "client", "split"] and len(rows) == len(drawn.records)
    # the file wins over any later draw: edit it and read again with another seed
    rows[0][2] = "test" if rows[0][2] != "test" else "valid"
    write_csv(split_file, header, rows)
    again = read_layout("derm_prr4", root, split="lesion", split_seed=99, split_file=str(split_file))
    assert {r.image_id: r.split for r in again.records}[rows[0][0]] == rows[0][2]
    write_csv(split_file, header, rows[1:])
    with pytest.raises(ValueError, match=rf"split file .*prr4_lesion.csv does not list image '{rows[0][0]}'"):
        read_layout("derm_prr4", root, split_file=str(split_file))
    write_csv(split_file, header, rows + [["ghost", "A", "train"]])
    with pytest.raises(ValueError, match=r"lists 1 image\(s\) not in the data \(e.g. 'ghost'\)"):
        read_layout("derm_prr4", root, split_file=str(split_file))


def test_grouped_stratified_split_keeps_groups_whole_and_cuts_each_class_near_the_fractions():
    rng = np.random.default_rng(0)
    groups, labels = [], []
    for g in range(300):  # 300 lesions of 1-3 images, 3 classes
        size, label = int(rng.integers(1, 4)), g % 3
        groups += [f"g{g}"] * size
        labels += [label] * size
    parts = grouped_stratified_split(labels, groups, (0.7, 0.1, 0.2), np.random.default_rng(5))
    for g in set(groups):
        assert len({parts[i] for i, h in enumerate(groups) if h == g}) == 1
    for c in range(3):
        share = np.bincount(parts[np.array(labels) == c], minlength=3) / np.sum(np.array(labels) == c)
        np.testing.assert_allclose(share, (0.7, 0.1, 0.2), atol=0.03)
    assert np.array_equal(parts, grouped_stratified_split(labels, groups, (0.7, 0.1, 0.2), np.random.default_rng(5)))
    assert not np.array_equal(parts, grouped_stratified_split(labels, groups, (0.7, 0.1, 0.2),
                                                              np.random.default_rng(6)))


# ------------------------------------------------------------------------------- B. isic2019
def test_isic2019_centers_classes_and_flamby_test_split(tmp_path):
    root = make_isic2019(tmp_path / "isic")
    manifest = read_layout("isic2019", root, valid_fraction=0.3)
    fed = build_federation("isic2019", seed=0, image_size=8, root=root, valid_fraction=0.3)
    assert [c.name for c in fed.clients] == list(ISIC2019_CENTERS)
    assert fed.class_names == ISIC2019_CLASS_NAMES
    parts = by_client_split(manifest)
    for center, folds in ISIC_TARGETS.items():
        client = fed.clients[center]
        assert client.test.labels.tolist() == folds["test"]  # FLamby's test fold, unchanged
        train_and_valid = Counter(client.train.labels.tolist()) + Counter(client.valid.labels.tolist())
        assert train_and_valid == Counter(folds["train"])  # valid is carved from FLamby's train fold
        assert all(r.image_id[6:8] == "tr" for r in parts[ISIC2019_CENTERS[center]].get("valid", []))
        for split in ("train", "valid", "test"):
            assert_pixels_match_labels(client.split(split))
    assert sum(len(c.valid) for c in fed.clients) > 0
    again = read_layout("isic2019", root, valid_fraction=0.3)
    other = [read_layout("isic2019", root, valid_fraction=0.3, split_seed=s).records for s in range(1, 5)]
    assert again.records == manifest.records and any(o != manifest.records for o in other)


def test_isic2019_lesion_split_and_split_csv_option(tmp_path):
    root = make_isic2019(tmp_path / "isic")
    manifest = read_layout("isic2019", root, split="lesion")
    assert leaked_lesions(manifest) == []
    assert any(r.lesion_id.startswith("IL_") for r in manifest.records)  # ids from the metadata CSV
    moved = tmp_path / "elsewhere.csv"
    shutil.move(root / "train_test_split", moved)
    with pytest.raises(FileNotFoundError, match=r"train_test_split.*split_csv"):
        read_layout("isic2019", root)
    assert read_layout("isic2019", root, split_csv=str(moved)).records == read_layout(
        "isic2019", root, split_csv=str(moved)).records
    (root / "ISIC_2019_Training_Metadata.csv").unlink()
    read_layout("isic2019", root, split_csv=str(moved))  # the reference split does not need lesion ids
    with pytest.raises(FileNotFoundError, match="ISIC_2019_Training_Metadata.csv"):
        read_layout("isic2019", root, split="lesion", split_csv=str(moved))


def test_prr3_is_centers_2_1_3_restricted_to_nv_bkl_mel(tmp_path):
    root = make_isic2019(tmp_path / "isic")
    fed = build_federation("derm_prr3", seed=0, image_size=8, root=root)
    assert [c.name for c in fed.clients] == ["A", "B", "C"] and fed.class_names == ("nv", "bkl", "mel")
    prr_label = {1: 0, 4: 1, 0: 2}  # NV, BKL, MEL -> nv, bkl, mel
    for client, center in zip(fed.clients, (2, 1, 3)):
        kept = [prr_label[t] for fold in ("train", "test") for t in ISIC_TARGETS[center][fold] if t in prr_label]
        got = torch.cat([client.train.labels, client.valid.labels, client.test.labels]).tolist()
        assert Counter(got) == Counter(kept)
        assert client.test.labels.tolist() == [prr_label[t] for t in ISIC_TARGETS[center]["test"] if t in prr_label]
        for split in ("train", "valid", "test"):  # pixels carry the FLamby class, labels the PRR one
            for image, label in zip(client.split(split).images, client.split(split).labels):
                flamby = {v: k for k, v in prr_label.items()}[int(label)]
                assert (image[:, 4, 4].int() - torch.tensor(colour(flamby))).abs().max() <= 6


# ------------------------------------------------------------------------------ C. ham10000
def test_ham10000_sources_as_clients_with_a_lesion_split(tmp_path):
    root = make_ham10000(tmp_path / "ham")
    fed = build_federation("ham10000", seed=0, image_size=8, root=root)
    assert [c.name for c in fed.clients] == ["vidir_modern", "vidir_molemax", "rosendahl", "vienna_dias"]
    assert fed.class_names == HAM_CLASSES
    for client in fed.clients:
        got = torch.cat([client.split(s).labels for s in ("train", "valid", "test")]).tolist()
        assert Counter(got) == Counter(HAM_CLASSES.index(d) for d in HAM_DX[client.name])
        for split in ("train", "valid", "test"):
            assert_pixels_match_labels(client.split(split))
    assert leaked_lesions(read_layout("ham10000", root, split_seed=4)) == []
    with pytest.raises(ValueError, match=r"split must be one of \['lesion'\]"):
        read_layout("ham10000", root, split="reference")


def test_ham10000_classes_option_selects_and_orders_labels(tmp_path):
    root = make_ham10000(tmp_path / "ham")
    fed = build_federation("ham10000", seed=0, image_size=8, root=root, classes=["nv", "bkl", "mel"])
    assert fed.class_names == ("nv", "bkl", "mel")
    total = sum((c.split(s).class_counts(3) for c in fed.clients for s in ("train", "valid", "test")),
                torch.zeros(3, dtype=torch.int64))
    flat = [d for v in HAM_DX.values() for d in v]
    assert total.tolist() == [flat.count("nv"), flat.count("bkl"), flat.count("mel")]
    with pytest.raises(ValueError, match="classes must be distinct names"):
        read_layout("ham10000", root, classes=["nv", "melanoma"])


# ---------------------------------------------------------------------------------- errors
LAYOUTS = {"derm_prr4": make_prr4, "isic2019": make_isic2019, "ham10000": make_ham10000}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_missing_root_folder(tmp_path, name):
    with pytest.raises(FileNotFoundError, match=r"missing folder .*nowhere"):
        read_layout(name, tmp_path / "nowhere")


def test_unknown_option_lists_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['splitt'\] of dataset 'derm_prr4'.*split_seed"):
        build_federation("derm_prr4", seed=0, image_size=8, root=make_prr4(tmp_path / "p"), splitt="lesion")
    with pytest.raises(ValueError, match=r"needs root=<its folder>.*or cache="):
        build_federation("derm_prr4", seed=0, image_size=8)


# (layout, path of the file to break relative to the root, how to break it, expected error, message)
def drop_column(column):
    return lambda h, rows: ([c for c in h if c != column], [[v for c, v in zip(h, r) if c != column] for r in rows])


def set_column(column, value, only_first=True):
    def edit(h, rows):
        i = h.index(column)
        return h, [r[:i] + [value] + r[i + 1:] if (k == 0 or not only_first) else r for k, r in enumerate(rows)]
    return edit


CSV_ERRORS = [
    ("derm_prr4", "csv_folder/clientB/train_clientB.csv", drop_column("label"), ValueError,
     r"train_clientB.csv: missing column\(s\) \['label'\]"),
    ("isic2019", "train_test_split", drop_column("center"), ValueError,
     r"train_test_split: missing column\(s\) \['center'\]"),
    ("ham10000", "HAM10000_metadata.csv", drop_column("dx"), ValueError,
     r"HAM10000_metadata.csv: missing column\(s\) \['dx'\]"),
    ("derm_prr4", "csv_folder/clientA/test_clientA.csv", set_column("label", "3"), ValueError,
     r"test_clientA.csv line 2: unknown label '3'"),
    ("isic2019", "train_test_split", set_column("target", "8"), ValueError,
     r"train_test_split line 2: unknown target '8'"),
    ("isic2019", "train_test_split", set_column("center", "6"), ValueError,
     r"train_test_split line 2: unknown center '6'"),
    ("ham10000", "HAM10000_metadata.csv", set_column("dx", "melanoma"), ValueError,
     r"HAM10000_metadata.csv line 2: unknown dx 'melanoma'"),
    ("ham10000", "HAM10000_metadata.csv", set_column("dataset", "paris"), ValueError,
     r"HAM10000_metadata.csv line 2: unknown dataset \(source\) 'paris'"),
    ("derm_prr4", "csv_folder/clientD/train_clientD.csv", lambda h, rows: (h, []), ValueError,
     r"train_clientD.csv lists no image: client D has no training images"),
    ("isic2019", "train_test_split",
     lambda h, rows: (h, [r[:12] + ["test"] + r[13:] if r[11] == "5" else r for r in rows]), ValueError,
     r"train_test_split: client 'HAM_vienna_dias' has no training images"),
    ("isic2019", "train_test_split", lambda h, rows: (h, [r for r in rows if r[10] != "7"]), ValueError,
     r"train_test_split: class\(es\) \['SCC'\] have no training image in any client"),
]


@pytest.mark.parametrize("name,relative,edit,error,message", CSV_ERRORS,
                         ids=[f"{c[0]}-{c[4][:40]}" for c in CSV_ERRORS])
def test_csv_errors_name_the_file(tmp_path, name, relative, edit, error, message):
    root = LAYOUTS[name](tmp_path / name)
    rewrite(root / relative, edit)
    with pytest.raises(error, match=message):
        read_layout(name, root)


def test_class_absent_from_every_train_split_prr4(tmp_path):
    labels = {c: {s: [0 if v == 2 and s == "train" else v for v in values] for s, values in splits.items()}
              for c, splits in PRR4_LABELS.items()}
    with pytest.raises(ValueError, match=r"csv_folder: class\(es\) \['mel'\] have no training image in any client"):
        read_layout("derm_prr4", make_prr4(tmp_path / "prr", labels))


def test_empty_client_after_class_selection_ham10000(tmp_path):
    with pytest.raises(ValueError, match=r"HAM10000_metadata.csv: client 'vidir_modern' has no training images"):
        read_layout("ham10000", make_ham10000(tmp_path / "ham"), classes=["df"])


@pytest.mark.parametrize("name,relative,message", [
    ("derm_prr4", "csv_folder/clientC/valid_clientC.csv", "missing CSV file .*valid_clientC.csv"),
    ("isic2019", "train_test_split", "missing CSV file .*train_test_split"),
    ("ham10000", "HAM10000_metadata.csv", "missing CSV file .*HAM10000_metadata.csv"),
    ("derm_prr4", "clientB/img_resize128/B_valid_0.png",
     r"missing image .*B_valid_0.png \(image 'B_valid_0' listed in .*valid_clientB.csv\)"),
    ("isic2019", "ISIC_2019_Training_Input_preprocessed/ISIC_3te001.jpg",
     r"missing image .*ISIC_3te001.jpg \(image 'ISIC_3te001' listed in .*train_test_split\)"),
    ("ham10000", "HAM10000_images_part_2/ISIC_1000003.jpg",
     r"missing image ISIC_1000003.jpg \(listed in .*HAM10000_metadata.csv line \d+\)"),
    ("derm_prr4", "clientA/img_resize128", r"missing folder .*clientA/img_resize128"),
    ("isic2019", "ISIC_2019_Training_Input_preprocessed", r"missing folder .*ISIC_2019_Training_Input_preprocessed"),
])
def test_missing_files_and_folders_are_named(tmp_path, name, relative, message):
    root = LAYOUTS[name](tmp_path / name)
    target = root / relative
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(FileNotFoundError, match=message):
        read_layout(name, root)


def test_missing_ham_image_folders(tmp_path):
    root = make_ham10000(tmp_path / "ham")
    shutil.rmtree(root / "HAM10000_images_part_1")
    shutil.rmtree(root / "HAM10000_images_part_2")
    with pytest.raises(FileNotFoundError, match="missing folders .*HAM10000_images_part_1 and .*part_2"):
        read_layout("ham10000", root)


@pytest.mark.parametrize("name,relative", [
    ("derm_prr4", "clientC/img_resize128/C_test_1.png"),
    ("isic2019", "ISIC_2019_Training_Input_preprocessed/ISIC_0tr004.jpg"),
    ("ham10000", "HAM10000_images_part_1/ISIC_2000004.jpg"),
])
def test_unreadable_image_is_named(tmp_path, name, relative):
    root = LAYOUTS[name](tmp_path / name)
    (root / relative).write_bytes(b"not an image")
    with pytest.raises(ValueError, match=rf"cannot read image .*{relative.split('/')[-1]}.*replace the file"):
        build_federation(name, seed=0, image_size=8, root=root)

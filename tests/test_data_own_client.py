"""One hospital's data: every dataset built for some of its clients from a copy of the layout that
holds only their files gives exactly the tensors of the full build; fixed class lists; the
federation's shape without its data (``describe_dataset``)."""

import csv
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from dermfake import HAM_DX, make_ham10000, make_isic2019, make_prr4
from test_data_prostate import write_case, write_png_site

from fedml_prr.data import DATASETS, build_federation, describe_dataset
from fedml_prr.data.dermoscopy.constants import ISIC2019_CENTERS, PRR3_CENTERS
from fedml_prr.data.layout import prepare_layout
from fedml_prr.data.selection import restrict_federation

SPLITS = ("train", "valid", "test")


def assert_same(full, part, clients):
    """``part`` holds exactly ``clients`` of ``full`` (in ``full``'s order), tensor for tensor."""
    expected = restrict_federation(full, clients)
    assert part.class_names == full.class_names and part.name == full.name
    assert [c.name for c in part.clients] == [c.name for c in expected.clients]
    for a, b in zip(expected.clients, part.clients):
        for split in SPLITS:
            assert torch.equal(a.split(split).images, b.split(split).images), (a.name, split)
            assert torch.equal(a.split(split).labels, b.split(split).labels), (a.name, split)


def copy_csv(source: Path, target: Path, keep) -> None:
    """``source`` with only the rows where ``keep(row)``."""
    with source.open(newline="") as handle:
        reader = csv.DictReader(handle)
        header, rows = reader.fieldnames, [row for row in reader if keep(row)]
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, header)
        writer.writeheader()
        writer.writerows(rows)


def copy_tree(source: Path, target: Path, names) -> Path:
    """``target`` with only the sub-folders ``names`` of ``source``."""
    for name in names:
        shutil.copytree(source / name, target / name)
    return target


# ---------------------------------------------------------------------------------- generated
def test_derm_synthetic_clients_are_seeded_by_their_identity():
    full = build_federation("derm_synthetic", seed=4, image_size=8, scale=0.02)
    for clients in (["C"], ["D", "B"]):
        part = build_federation("derm_synthetic", seed=4, image_size=8, scale=0.02, clients=clients)
        assert_same(full, part, clients)
        assert describe_dataset("derm_synthetic", scale=0.02, clients=clients) == part.info
    assert describe_dataset("derm_synthetic") == full.info


def test_prostate_synthetic_clients():
    options = dict(cases=(1, 1, 1), slices_per_case=4, sites=4)
    full = build_federation("prostate_synthetic", seed=1, image_size=16, **options)
    part = build_federation("prostate_synthetic", seed=1, image_size=16, clients=["C"], **options)
    assert_same(full, part, ["C"])
    assert describe_dataset("prostate_synthetic", clients=["C"], **options) == part.info
    assert describe_dataset("prostate_synthetic", **options).clients == ("A", "B", "C", "D")
    with pytest.raises(ValueError, match=r"has no client\(s\) \['E'\]; its clients are A, B, C, D$"):
        build_federation("prostate_synthetic", seed=1, image_size=16, clients=["E"], **options)


# ------------------------------------------------------------------------------- image_folder
def write_folder_client(root: Path, client: str, classes_by_split) -> None:
    colours = {"bkl": (0, 200, 0), "mel": (200, 0, 0), "nv": (0, 0, 200)}
    for split in SPLITS:
        (root / client / split).mkdir(parents=True, exist_ok=True)
        for cls, n in classes_by_split.get(split, {}).items():
            (root / client / split / cls).mkdir()
            for i in range(n):
                colour = tuple(min(255, c + 10 * i) for c in colours[cls])
                Image.new("RGB", (10, 9), colour).save(root / client / split / cls / f"{client}{i}.png")


@pytest.fixture
def folder(tmp_path):
    """site_a: no mel at all; site_b: nv, mel; site_c: every class."""
    root = tmp_path / "derm"
    write_folder_client(root, "site_a", {"train": {"bkl": 2, "nv": 1}, "test": {"bkl": 1}})
    write_folder_client(root, "site_b", {"train": {"nv": 2, "mel": 1}, "valid": {"nv": 1}, "test": {"mel": 1}})
    write_folder_client(root, "site_c", {"train": {"nv": 1, "mel": 1, "bkl": 1}, "test": {"nv": 1}})
    return root


def test_image_folder_hospital_copy_numbers_classes_as_the_federation(folder, tmp_path):
    full = build_federation("image_folder", seed=0, image_size=8, root=folder)
    assert full.class_names == ("bkl", "mel", "nv")
    hospital = copy_tree(folder, tmp_path / "a" / "derm", ["site_a"])  # its folder only; it has no mel
    options = dict(root=hospital, clients=["site_a"], class_names=list(full.class_names))
    part = build_federation("image_folder", seed=0, image_size=8, **options)
    assert_same(full, part, ["site_a"])
    assert describe_dataset("image_folder", **options) == part.info
    alone = build_federation("image_folder", seed=0, image_size=8, root=hospital)  # without the list
    assert alone.class_names == ("bkl", "nv") and not torch.equal(alone.clients[0].train.labels,
                                                                  part.clients[0].train.labels)
    # two of three clients from the full layout: the third is not read, even when broken
    shutil.rmtree(folder / "site_b" / "valid")
    two = build_federation("image_folder", seed=0, image_size=8, root=folder, clients=["site_c", "site_a"],
                           class_names=["bkl", "mel", "nv"])
    assert_same(full, two, ["site_a", "site_c"])


def test_image_folder_class_names_map_by_name_and_reject_other_classes(folder):
    names = ["nv", "mel", "bkl"]
    full = build_federation("image_folder", seed=0, image_size=8, root=folder)
    mapped = build_federation("image_folder", seed=0, image_size=8, root=folder, class_names=names)
    assert mapped.class_names == tuple(names)
    for a, b in zip(full.clients, mapped.clients):
        for split in SPLITS:
            assert torch.equal(a.split(split).images, b.split(split).images)
            assert [full.class_names[i] for i in a.split(split).labels] == \
                [names[i] for i in b.split(split).labels]
    wider = build_federation("image_folder", seed=0, image_size=8, root=folder, class_names=names + ["vasc"])
    assert wider.num_classes == 4  # a class no hospital holds yet is fine
    with pytest.raises(ValueError) as info:
        build_federation("image_folder", seed=0, image_size=8, root=folder, clients=["site_b"],
                         class_names=["nv", "bkl"])
    message = str(info.value)
    assert "is class 'mel', which is not in class_names ['nv', 'bkl']" in message and "\n" not in message
    with pytest.raises(ValueError, match=r"has no client\(s\) \['site_x'\] in .*derm; its clients are site_a, "
                                         r"site_b, site_c$"):
        build_federation("image_folder", seed=0, image_size=8, root=folder, clients=["site_x"])
    assert describe_dataset("image_folder", root=folder) is None  # only the folders tell
    assert describe_dataset("image_folder", root=folder, clients=["site_a"]) is None


# ---------------------------------------------------------------------------- dermoscopy layouts
def prr4_copy(root: Path, target: Path, clients) -> Path:
    for client in clients:
        shutil.copytree(root / f"client{client}", target / f"client{client}")
        shutil.copytree(root / "csv_folder" / f"client{client}", target / "csv_folder" / f"client{client}")
    return target


@pytest.mark.parametrize("split", ["reference", "lesion"])
def test_derm_prr4_hospital_copy(tmp_path, split):
    root = make_prr4(tmp_path / "prr")
    full = build_federation("derm_prr4", seed=0, image_size=8, root=root, split=split, split_seed=3)
    for clients in (["D"], ["C", "B"]):
        copy = prr4_copy(root, tmp_path / f"copy{''.join(clients)}", clients)
        part = build_federation("derm_prr4", seed=0, image_size=8, root=copy, split=split, split_seed=3,
                                clients=clients)
        assert_same(full, part, clients)
        assert describe_dataset("derm_prr4", root=copy, split=split, clients=clients) == part.info
    assert describe_dataset("derm_prr4", root=tmp_path / "nowhere") == full.info  # no file is read


def test_derm_prr4_split_file_of_the_federation_serves_a_hospital(tmp_path):
    root = make_prr4(tmp_path / "prr")
    split_file = tmp_path / "split.csv"
    full = build_federation("derm_prr4", seed=0, image_size=8, root=root, split="lesion", split_seed=5,
                            split_file=str(split_file))
    copy = prr4_copy(root, tmp_path / "copy", ["B"])
    # a split file beats the seed: another split_seed still gives the federation's split
    part = build_federation("derm_prr4", seed=0, image_size=8, root=copy, split="lesion", split_seed=9,
                            split_file=str(split_file), clients=["B"])
    assert_same(full, part, ["B"])


def isic_copy(root: Path, target: Path, centers) -> Path:
    """The images, split-file rows and metadata rows of ``centers`` only."""
    copy_csv(root / "train_test_split", target / "train_test_split",
             lambda row: ISIC2019_CENTERS[int(row["center"])] in centers)
    kept = set()
    with (target / "train_test_split").open(newline="") as handle:
        kept = {row["image"] for row in csv.DictReader(handle)}
    copy_csv(root / "ISIC_2019_Training_Metadata.csv", target / "ISIC_2019_Training_Metadata.csv",
             lambda row: row["image"] in kept)
    images = target / "ISIC_2019_Training_Input_preprocessed"
    images.mkdir(parents=True)
    for image in kept:
        shutil.copy(root / "ISIC_2019_Training_Input_preprocessed" / f"{image}.jpg", images)
    return target


@pytest.mark.parametrize("split", ["reference", "lesion"])
def test_isic2019_and_derm_prr3_hospital_copies(tmp_path, split):
    root = make_isic2019(tmp_path / "isic")
    options = dict(split=split, valid_fraction=0.3)
    full = build_federation("isic2019", seed=0, image_size=8, root=root, **options)
    centers = ["HAM_rosendahl", "HAM_vidir_molemax"]  # positions 3 and 1: each split seeded by its own
    copy = isic_copy(root, tmp_path / "copy", centers)
    part = build_federation("isic2019", seed=0, image_size=8, root=copy, clients=centers, **options)
    assert_same(full, part, centers)
    assert describe_dataset("isic2019", clients=centers, **options) == part.info
    # derm_prr3: client C is center 3
    prr3 = build_federation("derm_prr3", seed=0, image_size=8, root=root, **options)
    c_only = isic_copy(root, tmp_path / "copy_c", [ISIC2019_CENTERS[PRR3_CENTERS["C"]]])
    part3 = build_federation("derm_prr3", seed=0, image_size=8, root=c_only, clients=["C"], **options)
    assert_same(prr3, part3, ["C"])
    assert describe_dataset("derm_prr3", clients=["C"], **options) == part3.info


def test_isic2019_full_split_file_with_only_the_hospital_s_images(tmp_path):
    root = make_isic2019(tmp_path / "isic")
    full = build_federation("isic2019", seed=0, image_size=8, root=root)
    copy = isic_copy(root, tmp_path / "copy", ["MSK"])
    shutil.copy(root / "train_test_split", copy / "train_test_split")  # every center's rows, MSK's images
    assert_same(full, build_federation("isic2019", seed=0, image_size=8, root=copy, clients=["MSK"]), ["MSK"])
    with pytest.raises(FileNotFoundError, match="missing image"):  # the full federation needs every image
        build_federation("isic2019", seed=0, image_size=8, root=copy)


def test_ham10000_hospital_copy(tmp_path):
    root = make_ham10000(tmp_path / "ham")
    options = dict(split_seed=3)  # a seed whose split of vienna_dias (source 3) differs from source 0's
    full = build_federation("ham10000", seed=0, image_size=8, root=root, **options)
    copy = tmp_path / "copy"
    copy_csv(root / "HAM10000_metadata.csv", copy / "HAM10000_metadata.csv", lambda row: row["dataset"] ==
             "vienna_dias")
    with (copy / "HAM10000_metadata.csv").open(newline="") as handle:
        images = {row["image_id"] for row in csv.DictReader(handle)}
    assert len(images) == len(HAM_DX["vienna_dias"])
    for path in root.glob("HAM10000_images_part_*/*.jpg"):
        if path.stem in images:
            (copy / path.parent.name).mkdir(exist_ok=True)
            shutil.copy(path, copy / path.parent.name)
    part = build_federation("ham10000", seed=0, image_size=8, root=copy, clients=["vienna_dias"], **options)
    assert_same(full, part, ["vienna_dias"])  # vienna_dias lacks bcc, akiec, df, vasc: still 7 classes
    assert describe_dataset("ham10000", clients=["vienna_dias"]) == part.info
    few = describe_dataset("ham10000", classes=["nv", "bkl", "mel"], class_names=["nv", "bkl", "mel"])
    assert few.class_names == ("nv", "bkl", "mel") and len(few.clients) == 4
    with pytest.raises(ValueError, match=r"has the classes \['nv', 'bkl', 'mel'\].*choose them with the option "
                                         r"classes.*class_names \['mel', 'nv', 'bkl'\] differs"):
        build_federation("ham10000", seed=0, image_size=8, root=copy, classes=["nv", "bkl", "mel"],
                         class_names=["mel", "nv", "bkl"])


def test_prepared_cache_selects_clients_and_a_hospital_prepares_its_own(tmp_path):
    root = make_prr4(tmp_path / "prr")
    full = build_federation("derm_prr4", seed=0, image_size=8, root=root, split="lesion")
    shared = prepare_layout("derm_prr4", root, tmp_path / "cache", 8, split="lesion")
    assert_same(full, build_federation("derm_prr4", seed=0, image_size=8, cache=shared, clients=["D", "B"]),
                ["B", "D"])
    copy = prr4_copy(root, tmp_path / "copy", ["C"])
    own = prepare_layout("derm_prr4", copy, tmp_path / "own", 8, split="lesion", clients=["C"])
    assert_same(full, build_federation("derm_prr4", seed=0, image_size=8, cache=own), ["C"])
    assert_same(full, build_federation("derm_prr4", seed=0, image_size=8, cache=own, clients=["C"]), ["C"])
    with pytest.raises(ValueError, match=r"has no client\(s\) \['A'\] in its cache .*own; its clients are C$"):
        build_federation("derm_prr4", seed=0, image_size=8, cache=own, clients=["A"])
    with pytest.raises(ValueError, match=r"has the classes \['nv', 'bkl', 'mel'\] \(in this order\) in its cache"):
        build_federation("derm_prr4", seed=0, image_size=8, cache=own, class_names=["nv", "mel", "bkl"])


# ------------------------------------------------------------------------------------ prostate
def test_prostate_saml_site_copy_splits_its_cases_as_the_federation(tmp_path):
    root = tmp_path / "saml"
    for i in range(5):
        write_case(root / "BIDMC", f"Case{i:02d}", 3 + i, seed=i)
        write_case(root / "HK", f"Case{i:02d}", 4, seed=20 + i)
    sites = ["BIDMC", "HK"]
    full = build_federation("prostate_saml", seed=3, image_size=8, root=root, sites=sites, keep_empty_slices=True,
                            cache_dir=tmp_path / "cache")
    copy = copy_tree(root, tmp_path / "copy", ["HK"])  # HK is site 1 of the federation, the only one here
    part = build_federation("prostate_saml", seed=3, image_size=8, root=copy, sites=sites, clients=["HK"],
                            keep_empty_slices=True, cache=False)
    assert_same(full, part, ["HK"])
    assert describe_dataset("prostate_saml", sites=sites, clients=["HK"]) == part.info
    with pytest.raises(ValueError, match=r"has no client\(s\) \['UCL'\]; its clients are BIDMC, HK$"):
        build_federation("prostate_saml", seed=3, image_size=8, root=copy, sites=sites, clients=["UCL"])


def test_prostate_prr_site_copy(tmp_path):
    root = tmp_path / "prr"
    write_png_site(root, "A", {"train": ["a1.png", "a2.png"], "valid": ["a3.png"], "test": ["a4.png"]})
    write_png_site(root, "B", {"train": ["b1.png"], "valid": [], "test": ["b2.png"]})
    full = build_federation("prostate_prr", seed=0, image_size=8, root=root, cache=False)
    copy = copy_tree(root, tmp_path / "copy", ["B"])
    part = build_federation("prostate_prr", seed=0, image_size=8, root=copy, clients=["B"],
                            cache_dir=tmp_path / "c")
    assert_same(full, part, ["B"])
    assert describe_dataset("prostate_prr", clients=["B"]) == part.info
    assert describe_dataset("prostate_prr", root=root) is None  # the sites are the folders on disk
    with pytest.raises(ValueError, match=r"has no client\(s\) \['A'\] in .*copy; its clients are B$"):
        build_federation("prostate_prr", seed=0, image_size=8, root=copy, clients=["A"])


# ----------------------------------------------------------------------------- errors, registry
def test_every_dataset_takes_clients_and_class_names():
    for name in DATASETS.names():
        options = DATASETS.get(name).options
        assert options["clients"] is None and options["class_names"] is None, name


@pytest.mark.parametrize("name,options,valid", [
    ("derm_synthetic", {}, "A, B, C, D"),
    ("derm_prr4", {"root": "/nowhere"}, "A, B, C, D"),
    ("derm_prr3", {"root": "/nowhere"}, "A, B, C"),
    ("isic2019", {"root": "/nowhere"}, ", ".join(ISIC2019_CENTERS)),
    ("ham10000", {"root": "/nowhere"}, "vidir_modern, vidir_molemax, rosendahl, vienna_dias"),
    ("prostate_saml", {"root": "/nowhere", "sites": ["HK", "UCL"]}, "HK, UCL"),
])
def test_an_unknown_client_is_a_one_line_error_listing_the_valid_ones(name, options, valid):
    for call in (lambda: build_federation(name, seed=0, image_size=8, clients=["Z"], **options),
                 lambda: describe_dataset(name, clients=["Z"], **options)):
        with pytest.raises(ValueError) as info:
            call()
        assert str(info.value) == f"dataset {name!r} has no client(s) ['Z']; its clients are {valid}"


def test_clients_must_be_names_and_cannot_come_with_a_partition():
    with pytest.raises(ValueError, match=r"option clients must be a list of names, e.g. clients: \[A\]"):
        build_federation("derm_synthetic", seed=0, image_size=8, clients="A")
    with pytest.raises(ValueError, match="must list distinct, non-empty names"):
        describe_dataset("derm_synthetic", clients=["A", "A"])
    partitioned = dict(clients=["A"], partition="dirichlet", alpha=1.0)
    for call in (lambda: build_federation("derm_synthetic", seed=0, image_size=8, **partitioned),
                 lambda: describe_dataset("derm_synthetic", **partitioned)):
        with pytest.raises(ValueError, match="cannot come with partition: the label partition pools the images of "
                                             "every client and re-splits them"):
            call()
    with pytest.raises(ValueError, match=r"clients: 3 is the label partition's client count; add partition"):
        build_federation("derm_synthetic", seed=0, image_size=8, clients=3)


@pytest.mark.parametrize("name,options,classes", [
    ("derm_synthetic", {}, "['nv', 'bkl', 'mel']"),
    ("derm_prr4", {"root": "/nowhere"}, "['nv', 'bkl', 'mel']"),
    ("isic2019", {"root": "/nowhere"}, "['MEL', 'NV', 'BCC', 'AK', 'BKL', 'DF', 'VASC', 'SCC']"),
    ("prostate_synthetic", {}, "['background', 'prostate']"),
    ("prostate_saml", {"root": "/nowhere"}, "['background', 'prostate']"),
    ("prostate_prr", {"root": "/nowhere"}, "['background', 'prostate']"),
])
def test_a_fixed_class_list_accepts_only_itself(name, options, classes):
    with pytest.raises(ValueError) as info:
        build_federation(name, seed=0, image_size=8, class_names=["x", "y"], **options)
    assert str(info.value) == (f"dataset {name!r} has the classes {classes} (in this order); class_names ['x', 'y'] "
                               "differs - give that list or leave class_names out")


def test_description_follows_the_partition():
    options = dict(scale=0.05, partition="dirichlet", alpha=1.0, clients=3, min_train_images=2)
    fed = build_federation("derm_synthetic", seed=7, image_size=8, **options)
    assert describe_dataset("derm_synthetic", seed=7, **options) == fed.info
    assert describe_dataset("derm_synthetic", seed=7, **{**options, "partition_seed": 2}).name.endswith("seed=2)")
    default = describe_dataset("isic2019", partition="dirichlet", alpha=0.5)
    assert default.clients == ("P0", "P1", "P2", "P3", "P4", "P5")  # as many as the dataset has
    assert describe_dataset("image_folder", partition="dirichlet", alpha=0.5) is None
    with pytest.raises(ValueError, match="needs alpha"):
        describe_dataset("derm_synthetic", partition="dirichlet")

"""Prostate datasets: tiny NIfTI volumes and PNG slices written in a temp folder, and the synthetic federation."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from fedml_prr.data import DATASETS, build_federation, dataset_task
from fedml_prr.data import prostate
from fedml_prr.data.prostate import find_cases, load_prostate_prr, load_prostate_saml, split_cases
from fedml_prr.data.split_file import read_split_file
from fedml_prr.data.synthetic_prostate import make_synthetic_prostate


def write_case(folder, case, depth, *, mask_name=None, mask_shape=None, seed=0):
    """A ``12 x 10 x depth`` volume with a prostate (labels 1 and 2) in its middle slices."""
    rng = np.random.default_rng(seed)
    volume = rng.uniform(0, 500, size=(12, 10, depth)).astype(np.float32)
    volume[0, 0, :] = 5000  # a bright outlier the 99th-percentile clip removes
    labels = np.zeros(mask_shape or (12, 10, depth), dtype=np.uint8)
    labels[4:8, 3:6, 1:depth - 1] = 1
    labels[5:7, 4:5, 1:depth - 1] = 2  # central gland: merged into 1
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(folder / f"{case}.nii.gz"))
    nib.save(nib.Nifti1Image(labels, np.eye(4)), str(folder / (mask_name or f"{case}_segmentation.nii.gz")))


@pytest.fixture
def saml_root(tmp_path):
    root = tmp_path / "saml"
    for i in range(5):  # case i has 3 + i slices: slice counts tell which cases a split holds
        write_case(root / "BIDMC", f"Case{i:02d}", 3 + i, seed=i)
    for i in range(3):
        write_case(root / "ISBI_1.5", f"Case{i:02d}", 4, mask_name=f"Case{i:02d}_Segmentation.nii.gz", seed=10 + i)
    return root


def test_case_split_is_seeded_and_disjoint():
    ids = [f"Case{i:02d}" for i in range(13)]
    a, b = split_cases(ids, 0, 0), split_cases(ids, 0, 0)
    assert a == b and split_cases(ids, 1, 0) != a
    assert sorted(a["train"] + a["valid"] + a["test"]) == ids
    assert not (set(a["train"]) & set(a["valid"]) or set(a["train"]) & set(a["test"]) or set(a["valid"]) & set(a["test"]))
    assert len(a["valid"]) == len(a["test"]) == 3
    assert split_cases(ids[:2], 0, 0) == {"train": ids[:2], "valid": [], "test": []}


def test_saml_loader_reads_volumes_splits_by_case_and_saves_the_split(saml_root, tmp_path):
    cache = tmp_path / "cache"
    fed = load_prostate_saml(saml_root, image_size=16, seed=3, sites=("BIDMC", "ISBI_1.5"), keep_empty_slices=True,
                             cache_dir=cache)
    assert fed.task == "segmentation" and [c.name for c in fed.clients] == ["BIDMC", "ISBI_1.5"]
    split = {}
    for row in read_split_file(cache / "prostate_saml_split_seed3.csv", item_column="case_id"):
        split.setdefault(row.client, {}).setdefault(row.split, []).append(row.item)
    depth = {f"Case{i:02d}": 3 + i for i in range(5)}
    bidmc = fed.clients[0]
    for name in ("train", "valid", "test"):
        assert len(bidmc.split(name)) == sum(depth[c] for c in split["BIDMC"][name])  # whole cases, every slice
    cases = [set(split["BIDMC"][s]) for s in ("train", "valid", "test")]
    assert not (cases[0] & cases[1] or cases[0] & cases[2] or cases[1] & cases[2])
    assert set().union(*cases) == set(depth)
    images, masks = bidmc.train.images, bidmc.train.labels
    assert images.shape[1:] == (3, 16, 16) and images.dtype == torch.uint8
    assert masks.dtype == torch.uint8 and set(masks.unique().tolist()) == {0, 1}  # label 2 merged into 1
    assert images.max() == 255  # scaled to the full range after the percentile clip
    # the default keeps only slices with prostate (two end slices per case dropped)
    kept = load_prostate_saml(saml_root, image_size=16, seed=3, sites=("BIDMC",), cache=False,
                              split_file=cache / "prostate_saml_split_seed3.csv")
    assert len(kept.clients[0].train) == sum(depth[c] - 2 for c in split["BIDMC"]["train"])
    assert all(m.any() for m in kept.clients[0].train.labels)


def test_saml_neighbour_slices_are_the_channels(saml_root):
    fed = load_prostate_saml(saml_root, image_size=12, seed=0, sites=("BIDMC",), keep_empty_slices=True, cache=False)
    images = fed.clients[0].train.images
    # consecutive slices of one case: channel 2 of slice k is channel 1 of slice k + 1
    assert torch.equal(images[0, 2], images[1, 1]) and torch.equal(images[1, 0], images[0, 1])


def test_saml_cache_is_reused_and_the_split_file_is_checked(saml_root, tmp_path, monkeypatch):
    options = dict(image_size=16, seed=0, sites=("BIDMC",), cache_dir=tmp_path / "c")
    first = load_prostate_saml(saml_root, **options)
    monkeypatch.setattr(prostate, "_load_volume", lambda *a, **k: pytest.fail("a cached volume was read again"))
    again = load_prostate_saml(saml_root, **options)
    assert torch.equal(first.clients[0].train.images, again.clients[0].train.images)
    monkeypatch.undo()
    write_case(saml_root / "BIDMC", "Case09", 4)  # a new case on disk: the saved split no longer matches
    with pytest.raises(ValueError, match="Case09.*delete it"):
        load_prostate_saml(saml_root, **options)


def test_saml_errors_name_the_file(tmp_path):
    root = tmp_path / "bad"
    write_case(root / "HK", "Case00", 4)
    (root / "HK" / "Case00_segmentation.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="missing segmentation file .*Case00.nii.gz"):
        find_cases(root / "HK")
    write_case(root / "UCL", "Case01", 4, mask_shape=(12, 10, 5))
    with pytest.raises(ValueError, match="shape mismatch.*Case01"):
        load_prostate_saml(root, image_size=8, sites=("UCL",), cache=False)
    (root / "I2CVB").mkdir()
    with pytest.raises(ValueError, match="empty site.*I2CVB"):
        load_prostate_saml(root, image_size=8, sites=("I2CVB",), cache=False)
    with pytest.raises(FileNotFoundError, match="missing site folder"):
        load_prostate_saml(root, image_size=8, sites=("BIDMC",), cache=False)


def write_png_site(root, site, names_by_split, size=(20, 18)):
    for sub in ("images", "labels"):
        (root / site / sub).mkdir(parents=True, exist_ok=True)
    for split, names in names_by_split.items():
        (root / site / f"{split}.lst").write_text("".join(n + "\n" for n in names))
        for i, name in enumerate(names):
            rgb = np.full((size[1], size[0], 3), 40 + 10 * i, dtype=np.uint8)
            mask = np.zeros((size[1], size[0]), dtype=np.uint8)
            mask[5:10, 6:12] = 255
            Image.fromarray(rgb).save(root / site / "images" / name)
            Image.fromarray(mask).save(root / site / "labels" / name)


def test_prr_png_layout(tmp_path):
    root = tmp_path / "prr"
    write_png_site(root, "A", {"train": ["c1_s1.png", "c1_s2.png"], "valid": ["c2_s1.png"], "test": ["c3_s1.png"]})
    write_png_site(root, "B", {"train": ["x.png"], "valid": [], "test": ["y.png"]})
    fed = load_prostate_prr(root, image_size=16, cache_dir=tmp_path / "cache")
    assert [c.name for c in fed.clients] == ["A", "B"] and fed.task == "segmentation"
    a = fed.clients[0]
    assert (len(a.train), len(a.valid), len(a.test)) == (2, 1, 1) and len(fed.clients[1].valid) == 0
    assert a.train.images.shape == (2, 3, 16, 16) and a.train.labels.shape == (2, 16, 16)
    assert set(a.train.labels.unique().tolist()) == {0, 1}
    share = a.train.labels.float().mean().item()
    assert share == pytest.approx(5 * 6 / (20 * 18), abs=0.03)  # the 0/255 box, resized nearest
    assert fed.clients[0].train.class_counts(2).sum() == 2 * 16 * 16  # pixel counts


def test_prr_png_errors(tmp_path):
    root = tmp_path / "prr"
    write_png_site(root, "A", {"train": ["a.png"], "valid": [], "test": []})
    (root / "A" / "labels" / "a.png").unlink()
    with pytest.raises(FileNotFoundError, match="missing segmentation file .*labels.a.png"):
        load_prostate_prr(root, image_size=8, cache=False)
    Image.fromarray(np.zeros((5, 5), dtype=np.uint8)).save(root / "A" / "labels" / "a.png")
    with pytest.raises(ValueError, match="shape mismatch.*a.png"):
        load_prostate_prr(root, image_size=8, cache=False)
    (root / "A" / "train.lst").write_text("\n")
    with pytest.raises(ValueError, match="empty site"):
        load_prostate_prr(root, image_size=8, cache=False)
    (root / "A" / "train.lst").write_text("a.png\n")
    (root / "A" / "test.lst").unlink()
    with pytest.raises(FileNotFoundError, match="test.lst"):
        load_prostate_prr(root, image_size=8, cache=False)


def test_synthetic_prostate_is_deterministic_shifted_and_sparse():
    a, b = (make_synthetic_prostate(seed=2, image_size=32, cases=(2, 1, 1), slices_per_case=6) for _ in range(2))
    c = make_synthetic_prostate(seed=3, image_size=32, cases=(2, 1, 1), slices_per_case=6)
    assert a.task == "segmentation" and len(a.clients) == 5
    for x, y, z in zip(a.clients, b.clients, c.clients):
        assert torch.equal(x.train.images, y.train.images) and torch.equal(x.train.labels, y.train.labels)
        assert not torch.equal(x.train.images, z.train.images)
        assert len(x.train) == 12 and len(x.valid) == len(x.test) == 6
    big = make_synthetic_prostate(seed=0, image_size=48)
    foreground = torch.cat([cl.split(s).labels.flatten() for cl in big.clients for s in ("train", "valid", "test")])
    assert 0.01 < foreground.float().mean().item() < 0.03  # about 2 % prostate
    means = [cl.train.images.float().mean().item() for cl in big.clients]
    assert max(means) - min(means) > 10  # each site's scanner shifts the intensities


def test_registry_knows_the_segmentation_datasets():
    for name in ("prostate_synthetic", "prostate_saml", "prostate_prr"):
        assert name in DATASETS and dataset_task(name) == "segmentation"
    assert dataset_task("derm_synthetic") == "classification"
    with pytest.raises(ValueError, match="root"):
        build_federation("prostate_saml", seed=0, image_size=16)


def test_saml_split_moves_to_csv_and_a_redraw_gives_the_legacy_assignment(saml_root, tmp_path):
    options = dict(image_size=12, seed=4, sites=("BIDMC", "ISBI_1.5"), keep_empty_slices=True)
    cases = {"BIDMC": [f"Case{i:02d}" for i in range(5)], "ISBI_1.5": [f"Case{i:02d}" for i in range(3)]}
    legacy = {site: split_cases(ids, 4, i) for i, (site, ids) in enumerate(cases.items())}  # what the JSON held
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "prostate_saml_split_seed4.json").write_text(json.dumps(legacy, indent=2))
    drawn = load_prostate_saml(saml_root, cache_dir=tmp_path / "old", **options)  # the old default is not read
    rows = read_split_file(tmp_path / "old" / "prostate_saml_split_seed4.csv", item_column="case_id")
    assert {(r.client, r.item): r.split for r in rows} == {
        (site, case): split for site, splits in legacy.items() for split, ids in splits.items() for case in ids}
    legacy_file = tmp_path / "old" / "prostate_saml_split_seed4.json"
    from_json = load_prostate_saml(saml_root, cache=False, split_file=legacy_file, **options)
    for a, b in zip(drawn.clients, from_json.clients):
        for split in ("train", "valid", "test"):
            assert torch.equal(a.split(split).images, b.split(split).images)
    first = (tmp_path / "old" / "prostate_saml_split_seed4.csv").read_bytes()
    (tmp_path / "old" / "prostate_saml_split_seed4.csv").unlink()
    load_prostate_saml(saml_root, cache_dir=tmp_path / "old", **options)
    assert (tmp_path / "old" / "prostate_saml_split_seed4.csv").read_bytes() == first  # redrawn identically
    with pytest.raises(FileNotFoundError, match=r"missing split file .*gone.json; split files are CSV now"):
        load_prostate_saml(saml_root, cache=False, split_file=tmp_path / "gone.json", **options)


def test_saml_split_file_of_all_sites_serves_a_subset(saml_root, tmp_path):
    both = load_prostate_saml(saml_root, image_size=8, seed=1, sites=("BIDMC", "ISBI_1.5"), cache_dir=tmp_path)
    one = load_prostate_saml(saml_root, image_size=8, seed=1, sites=("ISBI_1.5",), cache=False,
                             split_file=tmp_path / "prostate_saml_split_seed1.csv")
    assert torch.equal(one.clients[0].valid.labels, both.clients[1].valid.labels)

"""The dataset registry: specs carry their task and options; unknown options are one-line errors."""

import pytest
import torch

from fedml_prr.data import DATASETS, DatasetSpec, build_federation, dataset_options, dataset_task, register_dataset
from fedml_prr.data.datasets import TASKS
from fedml_prr.registry import UnknownOptionError

SEGMENTATION = {"prostate_synthetic", "prostate_saml", "prostate_prr"}


def test_every_spec_knows_its_task_and_options():
    assert set(DATASETS.names()) >= {"derm_synthetic", "image_folder", "derm_prr4", "derm_prr3", "isic2019",
                                     "ham10000"} | SEGMENTATION
    for name in DATASETS.names():
        spec = DATASETS.get(name)
        assert isinstance(spec, DatasetSpec) and spec.task in TASKS and spec.name == name
        assert dataset_task(name) == ("segmentation" if name in SEGMENTATION else "classification")
        assert "seed" not in spec.options and "image_size" not in spec.options
        assert list(spec.options)[-2:] == ["clients", "class_names"]  # every dataset: all clients, its classes
        assert spec.options["clients"] is None and spec.options["class_names"] is None
    assert dataset_options("derm_synthetic") == {"scale": 0.25, "clients": None, "class_names": None}
    assert dataset_options("prostate_synthetic") == {"cases": (5, 2, 2), "slices_per_case": 10, "sites": 5,
                                                     "clients": None, "class_names": None}
    for layout in ("derm_prr4", "isic2019", "ham10000", "derm_prr3"):
        options = dataset_options(layout)
        assert list(options)[:3] == ["root", "cache", "workers"] and "split_seed" in options
    assert "split_csv" in dataset_options("isic2019") and "classes" in dataset_options("ham10000")
    dataset_options("derm_synthetic")["scale"] = 9  # a copy: the spec is unchanged
    assert dataset_options("derm_synthetic")["scale"] == 0.25
    with pytest.raises(KeyError, match="known datasets"):
        dataset_options("derm_synthtic")


@pytest.mark.parametrize("name,options", [
    ("derm_synthetic", {"scale": 0.01}),
    ("prostate_synthetic", {"cases": (1, 1, 1), "slices_per_case": 4, "sites": 2}),
])
def test_stated_defaults_are_the_factory_defaults(name, options):
    explicit = {**dataset_options(name), **options}
    a = build_federation(name, seed=3, image_size=16, **options)
    b = build_federation(name, seed=3, image_size=16, **explicit)
    assert a.task == dataset_task(name)
    for x, y in zip(a.clients, b.clients):
        assert torch.equal(x.train.images, y.train.images) and torch.equal(x.test.labels, y.test.labels)


@pytest.mark.parametrize("name,bad,listed", [
    ("derm_synthetic", "scal", "scale, clients, class_names"),
    ("prostate_saml", "site", "root, sites, keep_empty_slices, clip_percentile, split_fractions, split_file, cache, "
                              "cache_dir, clients, class_names"),
    ("isic2019", "spilt", "root, cache, workers, split, split_seed, valid_fraction, split_file, split_csv, clients, "
                          "class_names"),
])
def test_an_unknown_option_is_a_one_line_value_error(name, bad, listed):
    with pytest.raises(ValueError) as info:
        build_federation(name, seed=0, image_size=16, **{bad: 1})
    assert str(info.value) == f"unknown option(s) ['{bad}'] of dataset '{name}'; its options are {listed}"
    assert isinstance(info.value, UnknownOptionError) and isinstance(info.value, TypeError)  # what callers caught


def test_options_are_checked_before_the_factory_runs():
    calls = []
    spec = DatasetSpec("toy", lambda **kwargs: calls.append(kwargs), "classification", {"a": 1})
    with pytest.raises(ValueError, match=r"\['b'\] of dataset 'toy'; its options are a"):
        spec.build(seed=0, image_size=8, b=2)
    spec.build(seed=0, image_size=8, a=2)
    assert calls == [{"seed": 0, "image_size": 8, "a": 2}]


def test_registration_reads_the_signature_or_needs_options():
    def takes_anything(*, seed, image_size, **options):
        return None

    def no_default(*, seed, image_size, root):
        return None

    with pytest.raises(TypeError, match="register it with options="):
        register_dataset("test_only_anything")(takes_anything)
    with pytest.raises(TypeError, match="option 'root' needs a default"):
        register_dataset("test_only_no_default")(no_default)
    with pytest.raises(ValueError, match="task must be one of"):
        register_dataset("test_only_task", task="detection")
    assert "test_only_anything" not in DATASETS and "test_only_no_default" not in DATASETS

"""Real copies of the dermoscopy layouts, when the machine has them: the loader's counts against
the published ones (DATASETS.md).  Point the environment variables at the roots and run
``pytest -m slow tests/test_data_dermoscopy_real.py``; skipped otherwise."""

import os
from pathlib import Path

import pytest

from fedml_prr.data.dermoscopy.constants import (
    HAM_SOURCES,
    ISIC2019_CENTERS,
    ISIC2019_PUBLISHED_SIZES,
    PRR4_PUBLISHED_COUNTS,
)
from fedml_prr.data.layout import read_layout

pytestmark = pytest.mark.slow


def root_from(variable):
    value = os.environ.get(variable)
    if not value:
        pytest.skip(f"set {variable} to the dataset root to run this test")
    return Path(value)


def test_prr4_counts_are_the_published_ones():
    counts = read_layout("derm_prr4", root_from("FEDML_PRR_PRR4_ROOT")).counts()
    assert {c: {s: tuple(v) for s, v in splits.items()} for c, splits in counts.items()} == PRR4_PUBLISHED_COUNTS


def test_isic2019_sizes_are_flamby_s_and_prr3_matches_prr_clients_a_to_c():
    root = root_from("FEDML_PRR_ISIC2019_ROOT")
    counts = read_layout("isic2019", root).counts()
    for center in ISIC2019_CENTERS:
        train = sum(counts[center]["train"]) + sum(counts[center]["valid"])
        assert (train, sum(counts[center]["test"])) == ISIC2019_PUBLISHED_SIZES[center]
    prr3 = read_layout("derm_prr3", root).counts()
    for client in "ABC":
        total = [sum(prr3[client][s][k] for s in prr3[client]) for k in range(3)]
        assert total == [sum(PRR4_PUBLISHED_COUNTS[client][s][k] for s in PRR4_PUBLISHED_COUNTS[client])
                         for k in range(3)]


def test_ham10000_source_sizes_are_the_flamby_center_totals():
    counts = read_layout("ham10000", root_from("FEDML_PRR_HAM10000_ROOT")).counts()
    for source in HAM_SOURCES:
        assert sum(sum(v) for v in counts[source].values()) == sum(ISIC2019_PUBLISHED_SIZES[f"HAM_{source}"])

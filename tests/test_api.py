"""Bring your own data: the image_folder layout from a config, and per-client torch Datasets."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import TensorDataset

from fedml_prr.api import run_federation
from fedml_prr.cli import main
from fedml_prr.data import federation_from_datasets

ROOT = Path(__file__).resolve().parents[1]
TINY = {"comm_round": 1, "epochs": 1, "batch_size": 4, "prr_model_options": {"width": 0.25},
        "prr_eval_batch_size": 16}


def write_folder_federation(root: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    for client in ("site_a", "site_b"):
        for split, n in (("train", 6), ("valid", 2), ("test", 2)):
            for label, cls in enumerate(("bkl", "mel", "nv")):
                folder = root / client / split / cls
                folder.mkdir(parents=True)
                for i in range(n):
                    pixels = torch.randint(0, 120, (20, 20, 3), generator=gen, dtype=torch.uint8)
                    pixels[..., label] += 100
                    Image.fromarray(pixels.numpy()).save(folder / f"{i}.png")


def test_image_folder_from_the_cli(tmp_path, capsys):
    write_folder_federation(tmp_path / "data")
    config = tmp_path / "folder.yaml"
    config.write_text(json.dumps({
        "data_args": {"dataset": "image_folder"},
        "train_args": {"federated_optimizer": "PRR", "comm_round": 1, "epochs": 1, "batch_size": 4},
        "prr_args": {"prr_image_size": 32, "prr_data_root": str(tmp_path / "data"),
                     "prr_model_options": {"width": 0.25}, "prr_results_dir": str(tmp_path / "out")},
    }))
    assert main(["run", "--cf", str(config), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "site_a" in out and "site_b" in out and "Average" in out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["clients"] == ["site_a", "site_b"]


def test_cli_reports_a_bad_data_root(tmp_path, capsys):
    config = tmp_path / "folder.yaml"
    config.write_text(json.dumps({"data_args": {"dataset": "image_folder"},
                                  "prr_args": {"prr_image_size": 32, "prr_data_root": str(tmp_path / "missing"),
                                               "prr_results_dir": str(tmp_path / "out")}}))
    assert main(["run", "--cf", str(config), "--no-progress"]) == 1
    assert "missing" in capsys.readouterr().err


def test_cli_reports_an_unknown_key(tmp_path, capsys):
    assert main(["run", "--cf", str(ROOT / "configs" / "prr_derm_synthetic.yaml"), "--set", "prr_nope=1"]) == 2
    assert "unknown prr_args key" in capsys.readouterr().err


def test_run_federation_on_torch_datasets(tmp_path):
    gen = torch.Generator().manual_seed(1)

    def dataset(n):
        labels = torch.arange(n) % 3
        images = torch.rand(n, 3, 32, 32, generator=gen)
        images[torch.arange(n), labels] += 0.5
        return TensorDataset(images.clamp(0, 1), labels)

    federation = federation_from_datasets(
        {"h1": {"train": dataset(9), "valid": dataset(3), "test": dataset(3)},
         "h2": {"train": dataset(12), "valid": dataset(3), "test": dataset(3)}},
        class_names=["nv", "bkl", "mel"], image_size=32)
    result = run_federation(federation, algorithm="PRR",
                            overrides={**TINY, "prr_results_dir": str(tmp_path / "mine")})
    assert set(result.summary["selected"]["clients"]) == {"h1", "h2"}
    with pytest.raises(ValueError, match="client_num_in_total is 4"):
        run_federation(federation, config=ROOT / "configs" / "prr_derm_synthetic.yaml",
                       overrides={**TINY, "prr_results_dir": str(tmp_path / "bad")})

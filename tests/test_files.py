"""Atomic writes: the target holds the old or the new content, never a partial one, and no
temporary file is left behind."""

import pytest
import torch

from fedml_prr.files import atomic_torch_save, atomic_write, atomic_write_bytes, atomic_write_text


def test_writes_and_replaces_leaving_only_the_target(tmp_path):
    target = tmp_path / "a.json"
    atomic_write_text(target, "first\n")
    assert target.read_text() == "first\n"
    atomic_write_text(target, "second")
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\xff")
    assert target.read_text() == "second" and (tmp_path / "b.bin").read_bytes() == b"\x00\xff"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.bin"]


def test_a_failing_write_keeps_the_old_content_and_removes_the_temporary(tmp_path):
    target = tmp_path / "state.pt"
    atomic_torch_save({"w": torch.arange(3)}, target)

    def half_write(tmp):
        tmp.write_bytes(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, half_write)
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]


def test_never_creates_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        atomic_write_text(tmp_path / "missing" / "x.txt", "x")
    assert list(tmp_path.iterdir()) == []

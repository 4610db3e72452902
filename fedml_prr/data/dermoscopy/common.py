"""Helpers shared by the dermoscopy layout readers."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence

from fedml_prr.data.dermoscopy.constants import SPLIT_MODES
from fedml_prr.data.manifest import Manifest, Record, lesion_resplit, use_split_file


def check_split_mode(split: str, dataset: str, allowed: Sequence[str] = SPLIT_MODES) -> None:
    if split not in allowed:
        raise ValueError(f"dataset {dataset!r}: split must be one of {list(allowed)}, got {split!r}")


def int_text(value: str) -> str:
    """``"2.0"`` -> ``"2"`` (CSV writers sometimes store integer labels as floats); else unchanged."""
    try:
        number = float(value)
    except ValueError:
        return value
    return str(int(number)) if number.is_integer() else value


def finish(manifest: Manifest, *, split: str, split_seed: int, split_file: Optional[str]) -> Manifest:
    """Apply the ``lesion`` re-split if asked, then the split file (read it if present, else write it)."""
    if split == "lesion":
        records: Sequence[Record] = lesion_resplit(manifest.records, manifest.all_clients, split_seed)
        manifest = replace(manifest, records=tuple(records))
    return use_split_file(manifest, Path(split_file) if split_file is not None else None)

"""``fedml-prr diagnose``: the CSVs, figures and summaries of :mod:`.diagnosis` for a set of run folders."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from .diagnosis import (client_summaries, diagnosis_rows, format_summaries, read_run_records, receive_drops,
                        retrogress_curves, write_diagnosis_csv)
from .diagnosis_plots import plot_diagnosis, plot_retrogress_figure


@dataclass(frozen=True)
class DiagnosisReport:
    out: Path
    files: Tuple[Path, ...]
    text: str


def diagnose(folders: Sequence, out=None) -> DiagnosisReport:
    """``fedml-prr diagnose``: for each run folder with PRR's records, ``diagnosis_<label>.csv`` and
    ``diagnosis_<label>.png`` and its client summary; for the runs made with ``prr_eval_every_epoch``
    (PRR's and e.g. FedAvg's), ``retrogress_epochs.png``.  ``out`` defaults to the first run folder."""
    runs = [read_run_records(f) for f in folders]
    if not runs:
        raise ValueError("give at least one run folder")
    out = Path(out) if out is not None else runs[0].folder
    out.mkdir(parents=True, exist_ok=True)
    files: List[Path] = []
    texts: List[str] = []
    seen: Dict[str, int] = {}
    for run in runs:
        seen[run.label] = seen.get(run.label, 0) + 1
        tag = run.label if seen[run.label] == 1 else f"{run.label}_{seen[run.label]}"
        if not any("epochs" in r and r["epochs"] and "stage" in r["epochs"][0] for r in run.records):
            texts.append(f"{tag} ({run.folder}): no DET records (not a PRR run)")
            continue
        rows = diagnosis_rows(run)
        files.append(write_diagnosis_csv(rows, out / f"diagnosis_{tag}.csv"))
        files.append(plot_diagnosis(run, rows, out / f"diagnosis_{tag}.png"))
        texts.append(format_summaries(f"{tag} ({run.folder})", client_summaries(rows),
                                      "Dice" if run.score == "dice" else "F1"))
    with_curves = [run for run in runs if retrogress_curves(run)]
    if with_curves:
        files.append(plot_retrogress_figure(with_curves, out / "retrogress_epochs.png"))
        for run in with_curves:
            drops = ", ".join(f"{name} {100 * d:+.2f}" for name, d in receive_drops(retrogress_curves(run)).items())
            texts.append(f"{run.label}: mean change of the client-mean test {run.metric} at a receive (points): {drops}")
    return DiagnosisReport(out, tuple(files), "\n".join(texts))

"""PRR's diagnosis and the retrogress curves, read from runs' ``metrics.jsonl`` (issue 14).

What a PRR client records per round (:meth:`fedml_prr.algorithms.prr.PRRClient.round_info`): the DET
stage and CPA prototype factor ``gamma`` of each local epoch, and (``prr_diagnostics``) the validation
score of P_k and D_k before and after the round's receive.  With ``prr_eval_every_epoch`` every run
also records the test metrics of its reported model(s) after each local epoch and after each receive
(:mod:`fedml_prr.training.federated`).  This module turns them into

- one row per round and client (:func:`diagnosis_rows`, :func:`write_diagnosis_csv`),
- a short summary per client (:func:`client_summaries`, :func:`format_summaries`): how often each DET
  stage was chosen, the mean gain of D_k from the received deputy, the mean change of P_k per round,
- the retrogress curves of the paper's figure (:func:`retrogress_curves`): x = local epochs done,
  a receive point at every round's end.

Figures: :mod:`.diagnosis_plots`; the command's work: :mod:`.diagnosis_report`.  Everything is read as JSON; nothing is unpickled.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

STAGE_NAMES = {1: "recover", 2: "exchange", 3: "sublimate"}


@dataclass(frozen=True)
class RunRecords:
    """One run folder's metric records and what the diagnosis needs to know of the run."""

    folder: Path
    algorithm: str
    epochs: int
    metric: str  # macro_f1 (segmentation: dice): the test metric of the curves
    score: str  # f1 (segmentation: dice): the prefix of the recorded diagnosis keys
    records: Tuple[Mapping[str, Any], ...]

    @property
    def label(self) -> str:
        return self.algorithm

    @property
    def clients(self) -> List[str]:
        return sorted({r["client"] for r in self.records})


def read_run_records(folder) -> RunRecords:
    """A run folder's ``config.resolved.json`` and ``metrics.jsonl`` (one-line errors when missing)."""
    folder = Path(folder)
    config_path, metrics_path = folder / "config.resolved.json", folder / "metrics.jsonl"
    for path in (config_path, metrics_path):
        if not path.is_file():
            raise FileNotFoundError(f"{folder} is not a run folder: {path.name} is missing (give the prr_results_dir "
                                    "of a run)")
    config = json.loads(config_path.read_text())
    records = tuple(json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip())
    if not records:
        raise ValueError(f"{metrics_path} holds no round yet: nothing to diagnose")
    segmentation = "dice" in records[0]["test"]
    return RunRecords(folder, str(config.get("algorithm", folder.name)), int(config["schedule"]["epochs"]),
                      "dice" if segmentation else "macro_f1", "dice" if segmentation else "f1", records)


def _nan(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _mean(values: Sequence[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else float("nan")


#: the columns of :func:`diagnosis_rows` / the CSV, in order
COLUMNS = ("round", "client", "stages", "gamma_mean", "gamma_max", "personal_valid_before", "personal_valid_after",
           "deputy_valid_before", "deputy_valid_after", "deputy_received", "deputy_gain", "personal_change",
           "personal_train_min", "personal_test", "retrogress")


def diagnosis_rows(run: RunRecords) -> List[Dict[str, Any]]:
    """One row per (round, client): the epochs' DET stages (``"1-2"``), the CPA factor (mean and max over
    the epochs and classes; NaN while it is off), P_k's and D_k's validation score before and after the
    receive, ``deputy_gain`` = D after - before (NaN without a receive), ``personal_change`` = P's
    validation score now - at the client's previous round, the lowest stage-check training score of P in
    the round, P's test score and the retrogress.  Keys a run did not record are NaN."""
    s = run.score
    rows, previous = [], {}
    for r in sorted(run.records, key=lambda r: (r["round"], r["silo"])):
        epochs = r.get("epochs", [])
        gammas = [g for e in epochs if e.get("gamma") is not None for g in e["gamma"]]
        p_before = _nan(r.get(f"{s}_personal_valid_before_receive"))
        p_after = _nan(r.get(f"{s}_personal_valid_after_receive"))
        d_before = _nan(r.get(f"{s}_deputy_valid_before_receive"))
        d_after = _nan(r.get(f"{s}_deputy_valid_after_receive"))
        received = bool(r.get("deputy_received", False))
        rows.append({
            "round": r["round"], "client": r["client"],
            "stages": "-".join(str(e["stage"]) for e in epochs if "stage" in e),
            "gamma_mean": _mean(gammas), "gamma_max": max(gammas) if gammas else float("nan"),
            "personal_valid_before": p_before, "personal_valid_after": p_after,
            "deputy_valid_before": d_before, "deputy_valid_after": d_after, "deputy_received": received,
            "deputy_gain": d_after - d_before if received else float("nan"),
            "personal_change": p_before - previous.get(r["client"], float("nan")),
            "personal_train_min": min([_nan(e.get(f"{s}_personal_train")) for e in epochs] or [float("nan")],
                                      key=lambda v: math.inf if math.isnan(v) else v),
            "personal_test": _nan(r["test"].get(run.metric)), "retrogress": _nan(r.get("retrogress")),
        })
        previous[r["client"]] = p_after
    return rows


def write_diagnosis_csv(rows: Sequence[Mapping[str, Any]], path) -> Path:
    path = Path(path)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return path


@dataclass(frozen=True)
class ClientSummary:
    client: str
    rounds: int
    stage_share: Dict[str, float]  # share of the epochs spent in each DET stage
    deputy_gain: float  # mean D after - before over the rounds with a receive
    deputy_gain_positive: float  # share of those rounds where the received deputy scored higher
    personal_change: float  # mean change of P's validation score from one round to the next
    personal_swing: float  # mean |change| of P's validation score from one round to the next
    gamma_mean: float


def client_summaries(rows: Sequence[Mapping[str, Any]]) -> List[ClientSummary]:
    out = []
    for client in sorted({r["client"] for r in rows}):
        mine = [r for r in rows if r["client"] == client]
        stages = [int(x) for r in mine for x in r["stages"].split("-") if x]
        gains = [r["deputy_gain"] for r in mine if not math.isnan(r["deputy_gain"])]
        changes = [r["personal_change"] for r in mine if not math.isnan(r["personal_change"])]
        out.append(ClientSummary(
            client, len(mine), {name: stages.count(k) / len(stages) if stages else float("nan")
                                for k, name in STAGE_NAMES.items()},
            _mean(gains), sum(g > 0 for g in gains) / len(gains) if gains else float("nan"),
            _mean(changes), _mean([abs(c) for c in changes]), _mean([r["gamma_mean"] for r in mine])))
    return out


def format_summaries(label: str, summaries: Sequence[ClientSummary], score_label: str = "F1") -> str:
    """A few lines per run: one per client (scores in percentage points)."""
    lines = [f"{label}: DET stages (share of epochs), received deputy's gain and P_k's change per round "
             f"(validation {score_label}, points)"]
    for c in summaries:
        stages = " ".join(f"{name} {100 * share:3.0f}%" for name, share in c.stage_share.items())
        lines.append(f"  {c.client:<12} {stages} | deputy gain {100 * c.deputy_gain:+6.2f} "
                     f"(better in {100 * c.deputy_gain_positive:3.0f}% of receives) | P change "
                     f"{100 * c.personal_change:+6.2f}, mean |change| {100 * c.personal_swing:5.2f} | "
                     f"gamma {c.gamma_mean:.3f}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ retrogress curves
#: ``model -> client -> [(x, y)]``: x = local epochs done; at a receive two points share the x (the
#: model before, then after), so a drawn line shows the jump
Curves = Dict[str, Dict[str, List[Tuple[float, float]]]]


def retrogress_curves(run: RunRecords) -> Curves:
    """The test metric of each recorded model after every local epoch and after each receive.

    Models: PRR's ``personal`` and ``deputy``, a one-model method's ``model``.  Empty when the run was
    made without ``prr_eval_every_epoch``.
    """
    curves: Curves = {}
    for r in sorted(run.records, key=lambda r: (r["round"], r["silo"])):
        if "test_every_epoch" not in r:
            continue
        start = r["round"] * run.epochs
        for e, models in enumerate(r["test_every_epoch"]):
            for name, metrics in models.items():
                curves.setdefault(name, {}).setdefault(r["client"], []).append((start + e + 1, _nan(metrics[run.metric])))
        for name, metrics in r["test_after_receive"].items():
            curves.setdefault(name, {}).setdefault(r["client"], []).append((start + run.epochs, _nan(metrics[run.metric])))
    return curves


def mean_curve(per_client: Mapping[str, Sequence[Tuple[float, float]]]) -> List[Tuple[float, float]]:
    """The unweighted mean over clients, point by point (the clients' curves share their x sequence)."""
    series = [list(points) for points in per_client.values()]
    length = min(len(s) for s in series)
    return [(series[0][i][0], _mean([s[i][1] for s in series])) for i in range(length)]


def receive_drops(curves: Curves) -> Dict[str, float]:
    """Mean change of each model's client-mean test metric at the receive points (after - before)."""
    out = {}
    for name, per_client in curves.items():
        points = mean_curve(per_client)
        drops = [b[1] - a[1] for a, b in zip(points, points[1:]) if a[0] == b[0]]
        out[name] = _mean(drops)
    return out


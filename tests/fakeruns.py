"""Finished run folders written by the real :class:`~fedml_prr.training.results.ResultsStore` from
hand-made records, for tests of ``compare``'s statistics and report (no training)."""

import json

from fedml_prr.training.results import ResultsStore


def metric_block(f1, bacc=None, n=10):
    """Every classification metric of one split: accuracy = f1 + 0.2, AUC = f1 + 0.1, balanced
    accuracy ``bacc`` (default: f1)."""
    return {"accuracy": f1 + 0.2, "balanced_accuracy": f1 if bacc is None else bacc, "macro_f1": f1,
            "auc": f1 + 0.1, "n": n}


def write_run(folder, algorithm, seed, *, test, valid, retrogress=0.0, bacc=None, dataset="toy",
              dataset_options=None, clients="AB"):
    """A finished run: ``test[r][c]`` the test macro-F1 of client ``c`` at round ``r``, ``valid[r]``
    every client's validation macro-F1 at round ``r`` (it selects the round), ``bacc[r][c]`` the
    test balanced accuracy (default: the macro-F1); every round eligible for selection."""
    store = ResultsStore(folder, total_rounds=len(test), selection_fraction=0.0)
    store.start_fresh({"dataset": dataset, "options": {"dataset_options": dict(dataset_options or {})}},
                      overwrite=True)
    for r, row in enumerate(test):
        records = [{"round": r, "silo": c, "client": clients[c], "valid": metric_block(valid[r]),
                    "test": metric_block(v, None if bacc is None else bacc[r][c]),
                    "test_before_receive": metric_block(v), "retrogress": retrogress}
                   for c, v in enumerate(row)]
        store.add_round(r, records, {})
    store.summary({"algorithm": algorithm, "dataset": dataset, "seed": seed, "wall_time_s": 1.0})
    return folder


def read_json(path):
    return json.loads(path.read_text())

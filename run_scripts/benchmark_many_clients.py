#!/usr/bin/env python
"""Many-client benchmark: wall time per round and peak memory for 10, 50 and 100 clients with 10
sampled per round, PRR and FedAvg, in one process on the embedded data.

Each client count is a ``client_dirichlet`` partition (alpha 0.1) of ``derm_synthetic`` whose
scale grows with the clients (``0.005 * K``), so every client holds about the same number of
images (about 36 training images at the default ``--scale-per-client 0.005``) and a round trains the same
amount of data whatever K is: what grows with K is the federation around the round.  Each
(K, algorithm) runs in its own process, which reports:

- ``data_s`` / ``rss_data_mb``: time to build the federation and the resident memory after it;
- ``round_s``: wall time of each training round (deliver, train the 10 sampled clients, aggregate,
  record and checkpoint the round), from the second round on (the first one warms up);
- ``final_s``: the final delivery (every client evaluated: it grows with K);
- ``peak_rss_mb``: the process's peak resident memory (``ru_maxrss``).

Usage::

    OMP_NUM_THREADS=1 python run_scripts/benchmark_many_clients.py [--clients 10 50 100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2 ** 20


def one(clients: int, algorithm: str, rounds: int, per_round: int, per_client_scale: float, epochs: int) -> dict:
    import torch

    from fedml_prr.api import federation_for, make_config
    from fedml_prr.runtime.sp import build_local_federation
    from fedml_prr.training.results import open_results
    from fedml_prr.training.tasks import task_named

    torch.set_num_threads(1)
    results = tempfile.mkdtemp(prefix="fedml_prr_many_")
    doc = {"data_args": {"dataset": "derm_synthetic"}, "model_args": {"model": "vgg16_slim"},
           "train_args": {"federated_optimizer": algorithm, "client_num_in_total": clients,
                          "client_num_per_round": per_round, "comm_round": rounds, "epochs": epochs,
                          "batch_size": 16, "learning_rate": 0.05},
           "prr_args": {"prr_image_size": 32, "prr_model_options": {"width": 0.25}, "prr_results_dir": results,
                        "prr_dataset_options": {"scale": per_client_scale * clients, "partition": "client_dirichlet",
                                                "alpha": 0.1, "clients": clients, "min_train_images": 8}}}
    config = make_config(doc)
    started = time.perf_counter()
    federation = federation_for(config)
    data_s = time.perf_counter() - started
    rss_data = rss_mb()
    parties = build_local_federation(config, federation)
    store, _ = open_results(config, task_named(federation.task), resume=False, overwrite=True, runtime="benchmark")
    c = parties.coordinator
    c.store = store
    parties.step()  # handshake
    round_s = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(c.server.spr):
            parties.step()
        round_s.append(time.perf_counter() - started)
    started = time.perf_counter()
    parties.deliver()  # final delivery: every client evaluated
    final_s = time.perf_counter() - started
    train_images = sorted(len(cl.train) for cl in federation.clients)
    return {"clients": clients, "algorithm": algorithm, "per_round": per_round, "data_s": data_s,
            "rss_data_mb": rss_data, "round_s": round_s, "final_s": final_s,
            "train_images_per_client": [train_images[0], train_images[len(train_images) // 2], train_images[-1]],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--algorithms", nargs="+", default=["PRR", "FedAvg"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--per-round", type=int, default=10)
    parser.add_argument("--scale-per-client", type=float, default=0.005)
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # internal: run one (clients, algorithm)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(int(args.one[0]), args.one[1], args.rounds, args.per_round, args.scale_per_client,
                             args.epochs)))
        return
    print(f"{'K':>4} {'algorithm':<8} {'train img/client (min/median/max)':<34} {'data s':>7} "
          f"{'round s (median)':>17} {'final s':>8} {'RSS after data MB':>18} {'peak RSS MB':>12}")
    for clients in args.clients:
        for algorithm in args.algorithms:
            command = [sys.executable, __file__, "--one", str(clients), algorithm, "--rounds", str(args.rounds),
                       "--epochs", str(args.epochs), "--per-round", str(args.per_round),
                       "--scale-per-client", str(args.scale_per_client)]
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            r = json.loads(out)
            later = sorted(r["round_s"][1:] or r["round_s"])
            images = "/".join(str(n) for n in r["train_images_per_client"])
            print(f"{clients:>4} {algorithm:<8} {images:<34} {r['data_s']:>7.1f} {later[len(later) // 2]:>17.2f} "
                  f"{r['final_s']:>8.2f} {r['rss_data_mb']:>18.0f} {r['peak_rss_mb']:>12.0f}", flush=True)


if __name__ == "__main__":
    main()

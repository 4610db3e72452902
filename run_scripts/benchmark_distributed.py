"""Distributed runtimes: wall time of one job under sp, MPI and gRPC, and the wire's cost per round.

    python run_scripts/benchmark_distributed.py [--cf configs/prr_derm_synthetic.yaml] [--rounds 3]

1. Bytes and codec time: the protocol is driven in this process for PRR and FedAvg and every
   message of round 0 (models exchanged) is encoded with the typed wire codec, as gRPC carries
   it (:mod:`fedml_prr.fedml_adapter.wire`), then decoded and checked against its schema: what
   the server sends (all silos), what one client uploads, and the encode + decode time of all
   of the round's messages.
2. Wall time: the same config run as separate processes - ``fedml-prr run`` (sp),
   ``fedml-prr mpirun -np K+1`` (MPI), ``run_scripts/run_grpc_federation.py`` (gRPC with mutual
   TLS, K+1 processes on loopback) and the same with ``--insecure`` (plain TCP: the difference is
   the cost of TLS) - timed end to end (process start to exit, imports included) and by the
   server's own training clock (``wall_time_s`` of summary.json).  Every party uses one torch
   thread (``prr_threads: 1``) so that the runs compute the same thing; the metrics must agree
   and the script checks that they do.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[1]


def message_bytes(config_file: str, algorithm: str, rounds: int) -> Dict[str, float]:
    from fedml_prr.api import federation_for, make_config
    from fedml_prr.algorithms import get_algorithm
    from fedml_prr.fedml_adapter.wire import (CLIENT_RECEIVES, MESSAGE, SERVER_RECEIVES, UPLOAD, decode_message,
                                              encode_message, make, schemas)
    from fedml_prr.runtime.sp import build_local_federation

    spec = get_algorithm(algorithm)
    table = schemas(spec.client, spec.server)
    codec_seconds = 0.0

    def wire_bytes(kind: str, sender: int, receiver: int, payload: dict) -> int:
        nonlocal codec_seconds
        started = time.perf_counter()
        data = encode_message(make(kind, sender, receiver, payload))
        accepted = {k: table[k] for k in (SERVER_RECEIVES if kind == UPLOAD else CLIENT_RECEIVES)}
        decode_message(data, peer="benchmark", accepted=accepted)
        codec_seconds += time.perf_counter() - started
        return len(data)

    config = make_config(config_file, algorithm=algorithm, overrides={"comm_round": rounds, "prr_threads": 1})
    federation = federation_for(config)
    parties = build_local_federation(config, federation)
    coordinator = parties.coordinator
    silos = parties.silos
    spr = coordinator.server.spr
    sent: List[int] = []
    uploaded: List[int] = []
    # round 0 of a 2-round run: uploads of steps 1..S, server messages of steps 2..S+1 (the last
    # of them delivers the aggregated models); the last round of a run exchanges no models
    for step in range(spr + 2):
        if 2 <= step <= spr + 1:
            messages = coordinator.messages()
            sent.append(sum(wire_bytes(MESSAGE, 0, s + 1, messages[s]) for s in silos))
        parties.deliver()
        if step == spr + 1:
            break
        uploads = parties.train()
        if 1 <= step <= spr:
            uploaded.append(wire_bytes(UPLOAD, 1, 0, dict(uploads[0], records=[])))
            for silo in silos[1:]:
                wire_bytes(UPLOAD, silo + 1, 0, dict(uploads[silo], records=[]))
        coordinator.aggregate(uploads)
    return {"steps_per_round": spr, "server_per_round": sum(sent), "client_per_round": sum(uploaded),
            "clients": len(silos), "codec_seconds_per_round": codec_seconds}


def timed(command: List[str], env: Dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cf", default=str(ROOT / "configs" / "prr_derm_synthetic.yaml"))
    parser.add_argument("--rounds", type=int, default=3, help="algorithm rounds of the timed job")
    parser.add_argument("--algorithm", default="PRR")
    parser.add_argument("--skip-timing", action="store_true")
    args = parser.parse_args()

    print(f"per round ({args.cf}; protocol messages on the wire, typed codec):")
    print(f"{'algorithm':<10} {'steps/round':>11} {'server sends (all silos)':>26} {'one client uploads':>20} "
          f"{'encode+decode, all':>20}")
    for algorithm in ("PRR", "FedAvg"):
        b = message_bytes(args.cf, algorithm, rounds=2)
        print(f"{algorithm:<10} {b['steps_per_round']:>11} {b['server_per_round'] / 1e6:>23.2f} MB "
              f"{b['client_per_round'] / 1e6:>17.2f} MB {1e3 * b['codec_seconds_per_round']:>17.1f} ms")
    if args.skip_timing:
        return

    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    settings = ["--set", f"comm_round={args.rounds}", "--set", "prr_threads=1", "--algorithm", args.algorithm]
    with tempfile.TemporaryDirectory() as tmp:
        out = {name: Path(tmp) / name for name in ("sp", "mpi", "grpc", "grpc-insecure")}
        from fedml_prr.api import federation_for, make_config

        clients = len(federation_for(make_config(args.cf)).clients)
        commands = {
            "sp": [sys.executable, "-m", "fedml_prr", "run", "--cf", args.cf, "--no-progress", *settings,
                   "--set", f"prr_results_dir={out['sp']}"],
            "mpi": [sys.executable, "-m", "fedml_prr", "mpirun", "-np", str(clients + 1), "--cf", args.cf,
                    *settings, "--set", f"prr_results_dir={out['mpi']}"],
            "grpc": [sys.executable, str(ROOT / "run_scripts" / "run_grpc_federation.py"), "--cf", args.cf,
                     *settings, "--results-dir", str(out["grpc"])],
            "grpc-insecure": [sys.executable, str(ROOT / "run_scripts" / "run_grpc_federation.py"), "--cf", args.cf,
                              *settings, "--results-dir", str(out["grpc-insecure"]), "--insecure"],
        }
        wall = {name: timed(command, env) for name, command in commands.items()}
        summaries = {name: json.loads((out[name] / "summary.json").read_text()) for name in out}
        metrics = {name: (out[name] / "metrics.jsonl").read_text() for name in out}
    same = all(metrics[name] == metrics["sp"] for name in out)
    print(f"\n{args.algorithm}, {args.rounds} rounds, {clients} clients, one torch thread per party, "
          f"{os.cpu_count()} CPU cores (load average before: {os.getloadavg()[0]:.1f}):")
    print(f"{'runtime':<14} {'processes':>9} {'end to end':>11} {'vs sp':>6} {'server training clock':>22}")
    for name, processes in (("sp", 1), ("mpi", clients + 1), ("grpc", clients + 1), ("grpc-insecure", clients + 1)):
        print(f"{name:<14} {processes:>9} {wall[name]:>9.1f} s {wall[name] / wall['sp']:>5.2f}x "
              f"{summaries[name]['wall_time_s']:>20.1f} s")
    print(f"identical metrics in the {len(out)} runs: {same}")
    if not same:
        raise SystemExit("the runtimes disagree")


if __name__ == "__main__":
    main()

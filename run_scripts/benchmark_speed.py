#!/usr/bin/env python
"""Speed benchmark: PFA cost, and PRR's local epoch time relative to FedAvg's.

Prints, for this machine:

1. PFA over 4 clients of VGG16-slim and over 50 and 100 clients of ResNet-18 (``--resnet-clients``):
   time, and its ratio to a plain weighted average of the same states (same run; target for
   ResNet-18: within 10x); PFA of the demo model as a share of a PRR round on the demo federation
   (target: under 2 %).  100 ResNet-18 clients need about 14 GB of memory (inputs, K outputs and
   the transforms of the largest tensor).
2. PRR local epoch time / FedAvg local epoch time on the demo federation (same data, model,
   batch), with the faithful stage check and with the ``previous_epoch`` estimate
   (targets: <= 2.8 and <= 2.1).

Usage::

    python run_scripts/benchmark_speed.py [--config configs/prr_derm_synthetic.yaml] [--repeats 3]
        [--resnet-clients 50 100] [--only pfa]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from fedml_prr.algorithms.single_model import train_epoch
from fedml_prr.api import federation_for, make_config
from fedml_prr.core.averaging import weighted_average
from fedml_prr.core.fourier import progressive_fourier_aggregate
from fedml_prr.models import build_model
from fedml_prr.runtime.sp import build_local_federation

ROOT = Path(__file__).resolve().parents[1]


def timed(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs (after one warm-up)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def client_states(model_name: str, k: int, **options):
    states = []
    for i in range(k):
        torch.manual_seed(i)
        states.append(build_model(model_name, num_classes=3, **options).state_dict())
    return states


def bench_pfa(repeats: int, resnet_clients=(50, 100), reference: bool = False) -> None:
    print("== PFA vs plain weighted average (same states, same run) ==")
    cases = [("VGG16-slim (width 1.0)", "vgg16_slim", 4, {})] + [("ResNet-18", "resnet18", k, {}) for k in resnet_clients]
    old = None
    if reference:  # the full-spectrum PFA this one replaced, frozen in tests/pfa_reference.py
        sys.path.insert(0, str(ROOT / "tests"))
        import pfa_reference as old
    for label, model, k, options in cases:
        states = client_states(model, k, **options)
        weights = [1.0] * k
        n_params = sum(v.numel() for v in states[0].values() if v.is_floating_point())
        t_pfa = timed(lambda: progressive_fourier_aggregate(states, 0.8), repeats)
        t_avg = timed(lambda: weighted_average(states, weights), repeats)
        line = (f"{label:<24} K={k:<3} {n_params / 1e6:5.2f} M params/client: PFA {t_pfa * 1e3:8.1f} ms, "
                f"weighted average {t_avg * 1e3:7.1f} ms, ratio {t_pfa / t_avg:5.1f}x")
        if old is not None:
            t_old = timed(lambda: old.progressive_fourier_aggregate(states, 0.8), repeats)
            line += f"; full-spectrum PFA {t_old * 1e3:8.1f} ms ({t_old / t_avg:5.1f}x)"
        print(line, flush=True)


def participants(config_path: Path, algorithm: str, **overrides):
    cfg = make_config(config_path, algorithm=algorithm,
                      overrides={"prr_results_dir": "/tmp/fedml_prr_bench", **overrides})
    federation = federation_for(cfg)
    parties = build_local_federation(cfg, federation)
    parties.step()  # handshake, so clients know the global class counts
    parties.deliver()
    return cfg, parties, parties.silos


def bench_epochs(config_path: Path, repeats: int) -> None:
    print("\n== local epoch time on the demo federation (all clients, sum) ==")
    _, fed_parties, silos = participants(config_path, "FedAvg")

    def fedavg_epoch():
        for s in silos:
            client = fed_parties.clients[s]
            train_epoch(client, client.model, client.make_optimizer(client.model, 0), client.batch_loss)

    t_fedavg = timed(fedavg_epoch, repeats)
    print(f"FedAvg epoch: {t_fedavg:6.2f} s")
    results = {}
    for estimate in ("faithful", "previous_epoch"):
        cfg, parties, silos = participants(config_path, "PRR", prr_det_stage_estimate=estimate)
        from fedml_prr.training.federated import step_info

        first = step_info(1, parties.clients[silos[0]].spr, cfg.schedule)
        later = step_info(2, parties.clients[silos[0]].spr, cfg.schedule)
        for s in silos:  # a first epoch, so the next one runs the stage check
            parties.clients[s].local_step(first)

        def prr_epoch():
            for s in silos:
                parties.clients[s].local_step(later)

        results[estimate] = timed(prr_epoch, repeats)
        print(f"PRR epoch ({estimate:<14}): {results[estimate]:6.2f} s = {results[estimate] / t_fedavg:4.2f} x FedAvg")
    return results


def bench_round_share(config_path: Path, repeats: int) -> None:
    print("\n== PFA as a share of a PRR round on the demo federation ==")
    cfg, parties, silos = participants(config_path, "PRR")
    states = [parties.clients[s].deputy.state_dict() for s in silos]
    t_pfa = timed(lambda: progressive_fourier_aggregate(states, 0.8), repeats)
    spr = parties.clients[silos[0]].spr
    from fedml_prr.training.federated import step_info

    def one_round():
        for e in range(spr):
            info = step_info(1 + e, spr, cfg.schedule)
            for s in silos:
                parties.clients[s].local_step(info)

    t_round = timed(one_round, 1)
    print(f"PRR round ({spr} epochs, {len(silos)} clients): {t_round:6.2f} s; PFA: {t_pfa * 1e3:6.1f} ms "
          f"= {100 * t_pfa / t_round:5.2f} % of the round")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "prr_derm_synthetic.yaml")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--resnet-clients", type=int, nargs="*", default=[50, 100])
    parser.add_argument("--only", choices=["pfa"], help="run only this part")
    parser.add_argument("--reference", action="store_true",
                        help="also time the full-spectrum PFA it replaced (tests/pfa_reference.py)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"device {'cuda' if torch.cuda.is_available() else 'cpu'}")
    bench_pfa(args.repeats, args.resnet_clients, args.reference)
    if args.only == "pfa":
        return
    bench_epochs(args.config, args.repeats)
    bench_round_share(args.config, args.repeats)


if __name__ == "__main__":
    main()

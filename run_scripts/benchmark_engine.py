#!/usr/bin/env python
"""Speed of a PRR local epoch: the per-client loop versus the batched engine (``prr_engine``).

Builds a synthetic workload of the paper's dermoscopy size - 4 clients with 2091, 2708, 1144 and
1400 training images (``--paper-size``), 128 px, VGG16-slim width 1.0, batch 16, 3 classes -
and times real PRR local epochs (personalized model + deputy, faithful stage check: two eval
passes over the training split) through the single-process runtime's objects, for:

- ``loop``: each client trains on its own, float32 (the default engine);
- ``batched``: all clients' models as one computation, float32;
- ``batched-bf16``: the same under bfloat16 autocast.

Variants are interleaved (``--repeats`` rounds of loop, batched, batched-bf16, ...) and the median
is reported, so a load change on a shared machine hits all of them alike.  On a slow machine,
``--sample-batches N`` keeps only each client's first ``N * 16`` training images and the
per-epoch figures are extrapolated linearly to the full client sizes (stated in the output).

Per variant it prints: seconds per (full) local epoch of the 4 clients, training images per
second, and achieved TFLOP/s.  FLOP convention: forward FLOP of VGG16-slim counted by
``torch.utils.flop_counter`` (convolutions and matmuls, 2 FLOP per multiply-add), backward = 2x
forward; one epoch = per image 2 models x (forward + backward) + 2 stage-check forwards.

Usage::

    # a paper-size epoch sampled on a CPU (2 batches per client, 2 interleaved repeats):
    python run_scripts/benchmark_engine.py --paper-size --device cpu --sample-batches 2 --repeats 2
    # full paper-size epochs on a GPU (grouped convolutions are the CUDA default):
    python run_scripts/benchmark_engine.py --paper-size --device cuda --repeats 3
    # the whole paper schedule (50 rounds x 5 epochs, with evaluation) on the batched engine:
    python run_scripts/benchmark_engine.py --paper-size --device cuda --schedule 50 5 --variants batched-bf16
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import Dict, List

import torch

from fedml_prr.api import make_config
from fedml_prr.data.federation import ClientData, Federation, ImageSplit
from fedml_prr.models import build_model

PAPER_TRAIN_SIZES = (2091, 2708, 1144, 1400)  # PRR dermoscopy clients (spec section 4)
VARIANTS = {
    "loop": {"prr_engine": "loop"},
    "batched": {"prr_engine": "batched"},
    "batched-bf16": {"prr_engine": "batched", "prr_bf16": True},
}


def synthetic_federation(sizes, image_size: int, seed: int = 0) -> Federation:
    """Random uint8 images, imbalanced labels (3 classes), the given training sizes."""
    g = torch.Generator().manual_seed(seed)

    def split(n):
        labels = torch.multinomial(torch.tensor([0.6, 0.25, 0.15]), n, replacement=True, generator=g)
        labels[:3] = torch.arange(3)  # every class present
        return ImageSplit(torch.randint(0, 256, (n, 3, image_size, image_size), dtype=torch.uint8, generator=g), labels)

    clients = tuple(ClientData(f"client{i}", split(n), split(16), split(16)) for i, n in enumerate(sizes))
    return Federation("bench", ("nv", "bkl", "mel"), clients)


def forward_flop(image_size: int, width: float) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model("vgg16_slim", num_classes=3, width=width).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, image_size, image_size))
    return float(counter.get_total_flops())


def make_run_config(args, variant: str, epochs: int, rounds: int, results_dir: str):
    doc = {
        "train_args": {"comm_round": rounds, "epochs": epochs, "batch_size": 16, "learning_rate": 0.01},
        "prr_args": {"prr_image_size": args.image_size, "prr_model_options": {"width": args.width},
                     "prr_device": args.device, "prr_results_dir": results_dir,
                     "prr_conv_mode": args.conv_mode, "prr_channels_last": not args.no_channels_last,
                     **VARIANTS[variant]},
    }
    return make_config(doc, algorithm="PRR")


class EpochTimer:
    """Participants of one variant, past the handshake, a round's first epoch and one untimed
    warm-up epoch, so each timed step is a warm epoch with the faithful stage check."""

    def __init__(self, args, variant: str, federation: Federation, epochs: int) -> None:
        from fedml_prr.runtime.sp import build_local_federation

        self.cfg = make_run_config(args, variant, epochs, 1, tempfile.mkdtemp(prefix="bench_engine_"))
        self.parties = build_local_federation(self.cfg, federation)
        self.step()  # handshake
        self.step()  # epoch 0 of round 0 (RECOVER, no stage check)
        self.step()  # warm-up of an epoch with the stage check (first evaluation shapes), not timed

    def step(self) -> float:
        parties = self.parties
        parties.deliver()
        step = parties.coordinator.step
        sync(self.cfg.options.device)
        start = time.perf_counter()
        for client in parties.clients.values():
            client.train(step)
        sync(self.cfg.options.device)
        elapsed = time.perf_counter() - start
        parties.coordinator.aggregate({s: c.upload() for s, c in parties.clients.items()})
        return elapsed


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_epochs(args, variants: List[str]) -> None:
    sizes = PAPER_TRAIN_SIZES if args.paper_size else tuple(args.sizes)
    sampled = tuple(min(n, args.sample_batches * 16) for n in sizes) if args.sample_batches else sizes
    federation = synthetic_federation(sampled, args.image_size)
    full_images, timed_images = sum(sizes), sum(sampled)
    scale = full_images / timed_images
    flop_per_image = forward_flop(args.image_size, args.width) * (2 * 3 + 2)
    print(f"clients {sizes} ({full_images} training images), {args.image_size} px, VGG16-slim width {args.width}, "
          f"batch 16; forward {forward_flop(args.image_size, args.width) / 1e9:.2f} GFLOP/image, "
          f"{flop_per_image / 1e9:.2f} GFLOP per image-epoch (2 models fwd+bwd + 2 stage-check forwards)")
    if args.sample_batches:
        print(f"SAMPLED: each client's first {args.sample_batches * 16} training images ({timed_images} in all) are "
              f"timed; epoch figures are extrapolated x{scale:.2f} to the full sizes")
    timers = {v: EpochTimer(args, v, federation, epochs=args.repeats + 3) for v in variants}
    times: Dict[str, List[float]] = {v: [] for v in variants}
    for rep in range(args.repeats):
        for v in variants:
            times[v].append(timers[v].step())
            print(f"  repeat {rep + 1}/{args.repeats} {v:<13} {times[v][-1]:8.2f} s for {timed_images} images "
                  f"(load average {os.getloadavg()[0]:.2f})", flush=True)
    print(f"\n{'variant':<14} {'s / epoch':>10} {'images/s':>9} {'TFLOP/s':>8} {'vs loop':>8}  (median of {args.repeats})")
    reference = statistics.median(times[variants[0]]) * scale
    for v in variants:
        epoch = statistics.median(times[v]) * scale
        print(f"{v:<14} {epoch:10.1f} {full_images / epoch:9.1f} {full_images * flop_per_image / epoch / 1e12:8.3f} "
              f"{reference / epoch:7.2f}x")
    if "batched" in times and "batched-bf16" in times:
        print(f"bf16 speed-up over float32 (batched engine): "
              f"{statistics.median(times['batched']) / statistics.median(times['batched-bf16']):.2f}x")
    print(f"a {args.rounds_for_estimate} x 5 schedule at the fastest variant: "
          f"{min(statistics.median(t) for t in times.values()) * scale * args.rounds_for_estimate * 5 / 60:.1f} min "
          "of local epochs (evaluation not included)")


def bench_schedule(args, variants: List[str]) -> None:
    from fedml_prr.runtime.sp import run_single_process

    rounds, epochs = args.schedule
    sizes = PAPER_TRAIN_SIZES if args.paper_size else tuple(args.sizes)
    federation = synthetic_federation(sizes, args.image_size)
    for v in variants:
        cfg = make_run_config(args, v, epochs, rounds, tempfile.mkdtemp(prefix="bench_engine_"))
        start = time.perf_counter()
        run_single_process(cfg, federation, overwrite=True)
        elapsed = time.perf_counter() - start
        print(f"{v:<14} {rounds} rounds x {epochs} epochs: {elapsed:8.1f} s ({elapsed / rounds:.2f} s per round, "
              "evaluation and aggregation included)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paper-size", action="store_true", help="the paper's client sizes 2091/2708/1144/1400")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 320, 128, 160],
                        help="training images per client when --paper-size is not given")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--width", type=float, default=1.0, help="VGG16-slim width multiplier")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timed epochs per variant")
    parser.add_argument("--sample-batches", type=int, default=0,
                        help="time only each client's first N batches and extrapolate (0: full epochs)")
    parser.add_argument("--conv-mode", default="auto", choices=["auto", "grouped", "per_slot"])
    parser.add_argument("--no-channels-last", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--rounds-for-estimate", type=int, default=50)
    parser.add_argument("--schedule", type=int, nargs=2, metavar=("ROUNDS", "EPOCHS"),
                        help="instead: time whole runs of ROUNDS x EPOCHS through the single-process runtime")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"torch {torch.__version__}, device {args.device} ({device_name}), {torch.get_num_threads()} CPU threads, "
          f"load average {os.getloadavg()}, conv mode {args.conv_mode}, channels-last {not args.no_channels_last}")
    (bench_schedule if args.schedule else bench_epochs)(args, args.variants)


if __name__ == "__main__":
    main()

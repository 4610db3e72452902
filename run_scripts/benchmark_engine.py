#!/usr/bin/env python
"""Speed of a PRR local epoch: the per-client loop versus the batched engine (``prr_engine``).

Builds a synthetic workload of the paper's dermoscopy size - 4 clients with 2091, 2708, 1144 and
1400 training images (``--paper-size``), 128 px, VGG16-slim width 1.0, batch 16, 3 classes -
and times real PRR local epochs (personalized model + deputy, faithful stage check: two eval
passes over the training split) through the single-process runtime's objects, for:

- ``loop``: each client trains on its own, float32 (the default engine);
- ``batched``: all clients' models as one computation, float32;
- ``batched-bf16``: the same under bfloat16 autocast;
- ``batched-bf16-compile``: the same with ``prr_compile: true`` (``--compile-mode``).

Variants are interleaved (``--repeats`` rounds of loop, batched, batched-bf16, ...) and the median
is reported, so a load change on a shared machine hits all of them alike.  On a slow machine,
``--sample-batches N`` keeps only each client's first ``N * 16`` training images and the
per-epoch figures are extrapolated linearly to the full client sizes (stated in the output).

Per variant it prints: seconds per (full) local epoch of the 4 clients, training images per
second, and achieved TFLOP/s.  FLOP convention: forward FLOP of VGG16-slim counted by
``torch.utils.flop_counter`` (convolutions and matmuls, 2 FLOP per multiply-add), backward = 2x
forward; one epoch = per image 2 models x (forward + backward) + 2 stage-check forwards.
``run_scripts/gpu_check.py`` reuses :func:`measure_epochs` and :class:`Workload`.

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
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from fedml_prr.api import make_config
from fedml_prr.config import RunConfig
from fedml_prr.data.federation import ClientData, Federation, ImageSplit
from fedml_prr.data.synthetic_derm import PRR_CLASS_COUNTS
from fedml_prr.models import build_model

#: images per client (A, B, C, D) and split of the PRR dermoscopy split (spec section 4)
PAPER_SIZES: Dict[str, Tuple[int, ...]] = {split: tuple(sum(PRR_CLASS_COUNTS[c][split]) for c in "ABCD")
                                           for split in ("train", "valid", "test")}
PAPER_TRAIN_SIZES = PAPER_SIZES["train"]  # 2091, 2708, 1144, 1400
VARIANTS: Dict[str, Dict[str, Any]] = {
    "loop": {"prr_engine": "loop"},
    "batched": {"prr_engine": "batched"},
    "batched-bf16": {"prr_engine": "batched", "prr_bf16": True},
    "batched-bf16-compile": {"prr_engine": "batched", "prr_bf16": True, "prr_compile": True},
}
DEFAULT_VARIANTS = ("loop", "batched", "batched-bf16")


def synthetic_federation(sizes: Sequence[int], image_size: int, seed: int = 0,
                         eval_sizes: Optional[Tuple[Sequence[int], Sequence[int]]] = None) -> Federation:
    """Random uint8 images, imbalanced labels (3 classes), the given training sizes; valid and
    test splits of ``eval_sizes`` (per client) or 16 images each."""
    g = torch.Generator().manual_seed(seed)

    def split(n):
        labels = torch.multinomial(torch.tensor([0.6, 0.25, 0.15]), n, replacement=True, generator=g)
        labels[:3] = torch.arange(3)  # every class present
        return ImageSplit(torch.randint(0, 256, (n, 3, image_size, image_size), dtype=torch.uint8, generator=g), labels)

    valid, test = eval_sizes or ((16,) * len(sizes), (16,) * len(sizes))
    clients = tuple(ClientData(f"client{i}", split(n), split(v), split(t))
                    for i, (n, v, t) in enumerate(zip(sizes, valid, test)))
    return Federation("bench", ("nv", "bkl", "mel"), clients)


def forward_flop(image_size: int, width: float) -> float:
    """Forward FLOP of one VGG16-slim image (torch's flop counter: 2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model("vgg16_slim", num_classes=3, width=width).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, image_size, image_size))
    return float(counter.get_total_flops())


@dataclass(frozen=True)
class Workload:
    """What is timed: client training sizes, image size, model width, device and engine options."""

    sizes: Tuple[int, ...] = PAPER_TRAIN_SIZES
    image_size: int = 128
    width: float = 1.0
    device: str = "cuda"
    conv_mode: str = "auto"
    channels_last: bool = True
    compile_mode: str = "default"

    def config(self, variant: str, epochs: int, rounds: int, results_dir: str) -> RunConfig:
        """The PRR run of ``variant`` (paper hyper-parameters, this workload's sizes)."""
        engine = dict(VARIANTS[variant])
        if engine.get("prr_compile"):
            engine["prr_compile_mode"] = self.compile_mode
        doc = {
            "train_args": {"comm_round": rounds, "epochs": epochs, "batch_size": 16, "learning_rate": 0.01},
            "prr_args": {"prr_image_size": self.image_size, "prr_model_options": {"width": self.width},
                         "prr_device": self.device, "prr_results_dir": results_dir,
                         "prr_conv_mode": self.conv_mode, "prr_channels_last": self.channels_last, **engine},
        }
        return make_config(doc, algorithm="PRR")

    def flop_per_image_epoch(self) -> float:
        """2 models x (forward + backward = 3 forwards) + 2 stage-check forwards, per training image."""
        return forward_flop(self.image_size, self.width) * (2 * 3 + 2)


class EpochTimer:
    """Participants of one variant, past the handshake, a round's first epoch and one untimed
    warm-up epoch, so each timed step is a warm epoch with the faithful stage check.
    ``setup_s``: the wall time of those three steps (with ``prr_compile``: the compilation)."""

    def __init__(self, workload: Workload, variant: str, federation: Federation, epochs: int) -> None:
        from fedml_prr.runtime.sp import build_local_federation

        self.cfg = workload.config(variant, epochs, 1, tempfile.mkdtemp(prefix="bench_engine_"))
        start = time.perf_counter()
        self.parties = build_local_federation(self.cfg, federation)
        self.step()  # handshake
        self.step()  # epoch 0 of round 0 (RECOVER, no stage check)
        self.step()  # warm-up of an epoch with the stage check (first evaluation shapes), not timed
        self.setup_s = time.perf_counter() - start

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


def measure_epochs(workload: Workload, variants: Sequence[str], *, repeats: int = 3, sample_batches: int = 0,
                   interleave: bool = True, on_update: Optional[Callable[[Dict[str, Any]], None]] = None,
                   log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Time warm PRR local epochs of every variant; the figures as a JSON-ready dict.

    Parameters
    ----------
    sample_batches:
        Time only each client's first ``N * 16`` training images and extrapolate linearly to
        the full sizes (0: full epochs).
    interleave:
        Alternate the variants' repeats (a load change on a shared machine hits them alike);
        ``False``: one variant after the other, each one's figures complete before the next starts.
    on_update:
        Called with the result so far after every timed epoch (partial results survive a kill).
    """
    sampled = tuple(min(n, sample_batches * 16) for n in workload.sizes) if sample_batches else workload.sizes
    federation = synthetic_federation(sampled, workload.image_size)
    full_images, timed_images = sum(workload.sizes), sum(sampled)
    result: Dict[str, Any] = {
        "sizes": list(workload.sizes), "image_size": workload.image_size, "width": workload.width,
        "device": workload.device, "timed_images": timed_images, "extrapolation": full_images / timed_images,
        "forward_gflop_per_image": forward_flop(workload.image_size, workload.width) / 1e9,
        "gflop_per_image_epoch": workload.flop_per_image_epoch() / 1e9, "repeats": repeats, "variants": {},
    }
    log(f"clients {workload.sizes} ({full_images} training images), {workload.image_size} px, VGG16-slim width "
        f"{workload.width}, batch 16; forward {result['forward_gflop_per_image']:.2f} GFLOP/image, "
        f"{result['gflop_per_image_epoch']:.2f} GFLOP per image-epoch (2 models fwd+bwd + 2 stage-check forwards)")
    if sample_batches:
        log(f"SAMPLED: each client's first {sample_batches * 16} training images ({timed_images} in all) are "
            f"timed; epoch figures are extrapolated x{result['extrapolation']:.2f} to the full sizes")

    def record(variant: str, seconds: float) -> None:
        entry = result["variants"][variant]
        entry["times_s"].append(seconds)
        epoch = statistics.median(entry["times_s"]) * result["extrapolation"]
        entry.update(epoch_s=epoch, images_per_s=full_images / epoch,
                     tflop_per_s=full_images * result["gflop_per_image_epoch"] / epoch / 1e3)
        reference = result["variants"].get(variants[0], {}).get("epoch_s")
        for other in result["variants"].values():
            if reference and other.get("epoch_s"):
                other["speedup_vs_first"] = reference / other["epoch_s"]
        log(f"  repeat {len(entry['times_s'])}/{repeats} {variant:<20} {seconds:8.2f} s for {timed_images} images "
            f"(load average {os.getloadavg()[0]:.2f})")
        if on_update:
            on_update(result)

    def start(variant: str) -> EpochTimer:
        timer = EpochTimer(workload, variant, federation, epochs=repeats + 3)
        result["variants"][variant] = {"setup_s": timer.setup_s, "times_s": []}
        if on_update:
            on_update(result)
        return timer

    if interleave:
        timers = {v: start(v) for v in variants}
        for _ in range(repeats):
            for v in variants:
                record(v, timers[v].step())
    else:
        for v in variants:
            timer = start(v)
            for _ in range(repeats):
                record(v, timer.step())
            del timer
    return result


def print_epochs(result: Dict[str, Any], variants: Sequence[str], rounds_for_estimate: int) -> None:
    print(f"\n{'variant':<21} {'s / epoch':>10} {'images/s':>9} {'TFLOP/s':>8} {'vs ' + variants[0]:>9}  "
          f"(median of {result['repeats']})")
    for v in variants:
        entry = result["variants"][v]
        print(f"{v:<21} {entry['epoch_s']:10.1f} {entry['images_per_s']:9.1f} {entry['tflop_per_s']:8.3f} "
              f"{entry['speedup_vs_first']:8.2f}x")
    times = {v: statistics.median(result["variants"][v]["times_s"]) for v in variants}
    if "batched" in times and "batched-bf16" in times:
        print(f"bf16 speed-up over float32 (batched engine): {times['batched'] / times['batched-bf16']:.2f}x")
    fastest = min(result["variants"][v]["epoch_s"] for v in variants)
    print(f"a {rounds_for_estimate} x 5 schedule at the fastest variant: {fastest * rounds_for_estimate * 5 / 60:.1f} min "
          "of local epochs (evaluation not included)")


def bench_schedule(workload: Workload, variants: List[str], rounds: int, epochs: int) -> None:
    from fedml_prr.runtime.sp import run_single_process

    federation = synthetic_federation(workload.sizes, workload.image_size)
    for v in variants:
        cfg = workload.config(v, epochs, rounds, tempfile.mkdtemp(prefix="bench_engine_"))
        start = time.perf_counter()
        run_single_process(cfg, federation, overwrite=True)
        elapsed = time.perf_counter() - start
        print(f"{v:<20} {rounds} rounds x {epochs} epochs: {elapsed:8.1f} s ({elapsed / rounds:.2f} s per round, "
              "evaluation and aggregation included)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paper-size", action="store_true", help="the paper's client sizes 2091/2708/1144/1400")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 320, 128, 160],
                        help="training images per client when --paper-size is not given")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--width", type=float, default=1.0, help="VGG16-slim width multiplier")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timed epochs per variant")
    parser.add_argument("--sample-batches", type=int, default=0,
                        help="time only each client's first N batches and extrapolate (0: full epochs)")
    parser.add_argument("--conv-mode", default="auto", choices=["auto", "grouped", "per_slot"])
    parser.add_argument("--no-channels-last", action="store_true")
    parser.add_argument("--compile-mode", default="default", help="torch.compile mode of the -compile variant")
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
    workload = Workload(sizes=PAPER_TRAIN_SIZES if args.paper_size else tuple(args.sizes), image_size=args.image_size,
                        width=args.width, device=args.device, conv_mode=args.conv_mode,
                        channels_last=not args.no_channels_last, compile_mode=args.compile_mode)
    if args.schedule:
        bench_schedule(workload, args.variants, *args.schedule)
    else:
        result = measure_epochs(workload, args.variants, repeats=args.repeats, sample_batches=args.sample_batches)
        print_epochs(result, args.variants, args.rounds_for_estimate)


if __name__ == "__main__":
    main()

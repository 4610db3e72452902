#!/usr/bin/env python
"""Input-pipeline benchmark: does training ever wait for data?

Prints, for this machine:

1. ``fedml-prr prepare`` throughput: decoding and resizing HAM10000-like JPEGs (600 x 450) of a
   generated fake layout into a cache (one-off cost per dataset and size);
2. the training pipeline's throughput: batches drawn from the memory-mapped cache exactly as
   training draws them (shuffled gather + the reference augmentation, on the training device);
3. the throughput of the VGG16-slim training step (forward, loss, backward, SGD step) on
   ready-made batches;

and their ratio (target: the pipeline at least 5x faster than the step, so the step waits for
data less than 1/6 of the time; the pipeline runs in the training loop, not overlapped).

Usage::

    python run_scripts/benchmark_pipeline.py [--images 256] [--size 128] [--batch 16] [--width 1.0]
                                             [--threads 2] [--device auto]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from fedml_prr.data.cache import load_cache
from fedml_prr.data.dermoscopy.constants import HAM_IMAGE_FOLDERS, HAM_METADATA, HAM_SOURCES
from fedml_prr.data.layout import prepare_layout
from fedml_prr.models import build_model
from fedml_prr.training.loops import training_batches


def fake_ham10000(root: Path, n: int, seed: int = 0) -> Path:
    """A HAM10000 layout of ``n`` textured 600 x 450 JPEGs (quality 90), 3 classes, 4 sources."""
    rng = np.random.default_rng(seed)
    rows = ["lesion_id,image_id,dx,dx_type,age,sex,localization,dataset"]
    for i in range(n):
        low = rng.random((3, 12, 16)).astype(np.float32)
        image = F.interpolate(torch.from_numpy(low)[None], size=(450, 600), mode="bicubic", align_corners=False)[0]
        image = image + 0.08 * torch.from_numpy(rng.standard_normal((3, 450, 600)).astype(np.float32))
        array = (image.clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy()
        image_id = f"ISIC_{i:07d}"
        folder = root / HAM_IMAGE_FOLDERS[i % 2]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(folder / f"{image_id}.jpg", quality=90)
        rows.append(f"HAM_{i // 2:07d},{image_id},{('nv', 'bkl', 'mel')[i % 3]},histo,50,male,back,"
                    f"{HAM_SOURCES[(i // 3) % 4]}")
    (root / HAM_METADATA).write_text("\n".join(rows) + "\n")
    return root


def images_per_second(fn, images: int, repeats: int) -> float:
    """Median throughput of ``fn()`` (which handles ``images`` images) over ``repeats`` runs, after a warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return images / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=256, help="fake HAM10000 images to generate and prepare")
    parser.add_argument("--size", type=int, default=128, help="cache / model input size (the paper: 128)")
    parser.add_argument("--batch", type=int, default=16, help="training batch size (the paper: 16)")
    parser.add_argument("--width", type=float, default=1.0, help="VGG16-slim width (the paper: 1.0)")
    parser.add_argument("--steps", type=int, default=5, help="training steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--workers", type=int, default=None, help="decoding threads of prepare (default: auto)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{args.threads} threads, device {device}; load average at start {os.getloadavg()[0]:.2f}")

    with tempfile.TemporaryDirectory() as tmp:
        root = fake_ham10000(Path(tmp) / "ham", args.images)
        start = time.perf_counter()
        cache = prepare_layout("ham10000", root, Path(tmp) / "cache", args.size, workers=args.workers,
                               classes=["nv", "bkl", "mel"])
        prepare_rate = args.images / (time.perf_counter() - start)
        federation = load_cache(cache)
        train = federation.clients[0].train
        pool = train.__class__(torch.cat([c.train.images for c in federation.clients]),
                               torch.cat([c.train.labels for c in federation.clients])).to(device)

        generator = torch.Generator().manual_seed(0)

        def pipeline_epoch():
            for x, y in training_batches(pool, args.batch, generator, augment=True):
                pass
            return x, y

        def plain_epoch():
            for x, y in training_batches(pool, args.batch, generator, augment=False):
                pass

        pipeline_rate = images_per_second(pipeline_epoch, len(pool) - len(pool) % args.batch, args.repeats)
        plain_rate = images_per_second(plain_epoch, len(pool) - len(pool) % args.batch, args.repeats)

        model = build_model("vgg16_slim", num_classes=3, width=args.width).to(device).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, weight_decay=1e-6)
        x, y = next(training_batches(pool, args.batch, generator, augment=True))

        def train_steps():
            for _ in range(args.steps):
                logits, _ = model(x)
                loss = F.cross_entropy(logits, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

        step_rate = images_per_second(train_steps, args.steps * args.batch, args.repeats)

    ratio = pipeline_rate / step_rate
    print(f"prepare (decode {args.images} JPEGs 600x450 -> {args.size} px, cache write): {prepare_rate:8.1f} img/s")
    print(f"pipeline (cache gather + augmentation, batch {args.batch}, {device}):      {pipeline_rate:8.1f} img/s")
    print(f"  without augmentation (gather + scaling only):                {plain_rate:8.1f} img/s")
    print(f"training step (VGG16-slim width {args.width}, {args.size} px, batch {args.batch}): {step_rate:8.1f} img/s")
    print(f"pipeline / training step: {ratio:.1f}x (target >= 5x): the step waits for data "
          f"{100 / (1 + ratio):.1f} % of the time -> {'OK' if ratio >= 5 else 'TOO SLOW'}")
    print(f"load average at end: {os.getloadavg()[0]:.2f} (1 min), {os.getloadavg()[1]:.2f} (5 min)")


if __name__ == "__main__":
    main()

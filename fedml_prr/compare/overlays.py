"""``overlays.png`` of a segmentation comparison: test slices per site with the ground truth and the
masks predicted by PRR's and FedAvg's reported models (each client's model at its selected round,
``checkpoints/best/<client>.pt``).

One row per site, ``per_site`` columns (the test slices with the largest prostate, spread over
the split); each panel shows the slice's middle channel in grey with the outline of the ground
truth (white, filled lightly) and of each algorithm's prediction (its comparison colour).
Drawn on its own Agg ``Figure`` like the other comparison plots.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .. import api
from ..data.augment import to_model_input
from .plots import DPI, algorithm_colours
from ..training.setup import model_factory

logger = logging.getLogger(__name__)

#: the algorithms drawn, when they are part of the comparison
OVERLAID = ("PRR", "FedAvg")


def pick_slices(masks: torch.Tensor, count: int) -> List[int]:
    """Indices of ``count`` slices with foreground, evenly spread over those ranked by size (largest first)."""
    area = masks.flatten(1).sum(1)
    ranked = [int(i) for i in torch.argsort(area, descending=True, stable=True) if area[i] > 0]
    if len(ranked) <= count:
        return ranked
    return [ranked[int(round(k * (len(ranked) - 1) / max(count - 1, 1)))] for k in range(count)]


@torch.no_grad()
def _predict(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    model.eval()
    logits, _ = model(to_model_input(images))
    return logits.argmax(1).cpu()


def write_overlays(plan: Sequence, path: Path, *, per_site: int = 4,
                   algorithms: Sequence[str] = OVERLAID) -> Optional[Path]:
    """Draw the overlay figure from the finished runs of ``plan`` (:class:`~.compare.PlannedRun`).

    Uses each algorithm's first seed.  Returns None (and logs why) when none of ``algorithms``
    is in the plan.  ``plan``: :class:`~fedml_prr.compare.matrix.PlannedRun` items.
    """
    runs = {}
    for item in plan:
        if item.algorithm in algorithms and item.algorithm not in runs:
            runs[item.algorithm] = item
    if not runs:
        logger.info("no %s run in the comparison: no overlay figure", " or ".join(algorithms))
        return None
    first = next(iter(runs.values()))
    federation = api.federation_for(first.config)
    colours = algorithm_colours([p.algorithm for p in plan if p.seed == first.seed])
    predictions: Dict[str, Dict[str, torch.Tensor]] = {}
    chosen = {c.name: pick_slices(c.test.labels, per_site) for c in federation.clients}
    for name, item in runs.items():
        build = model_factory(item.config, federation.num_classes)
        predictions[name] = {}
        for client in federation.clients:
            model = build()
            state = torch.load(Path(item.folder) / "checkpoints" / "best" / f"{client.name}.pt", weights_only=True)
            model.load_state_dict(state)
            predictions[name][client.name] = _predict(model, client.test.images[chosen[client.name]])

    rows, cols = len(federation.clients), max(1, max(len(v) for v in chosen.values()))
    fig = Figure(figsize=(1.9 * cols + 1.6, 1.9 * rows + 0.6), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    for r, client in enumerate(federation.clients):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(chosen[client.name]):
                ax.axis("off")
                continue
            index = chosen[client.name][c]
            truth = client.test.labels[index].numpy() > 0
            ax.imshow(client.test.images[index, 1].numpy(), cmap="gray", vmin=0, vmax=255)
            ax.imshow(np.ma.masked_where(~truth, truth), cmap="Greens", alpha=0.35, vmin=0, vmax=1)
            ax.contour(truth.astype(float), levels=[0.5], colors="white", linewidths=1.2)
            for name in runs:
                pred = predictions[name][client.name][c].numpy() > 0
                if pred.any():
                    ax.contour(pred.astype(float), levels=[0.5], colors=colours.get(name, "red"), linewidths=1.2)
            if c == 0:
                ax.set_ylabel(client.name)
    handles = [Line2D([], [], color="white", markeredgecolor="black", label="ground truth", linewidth=2)]
    handles += [Line2D([], [], color=colours.get(n, "red"), label=n, linewidth=2) for n in runs]
    fig.legend(handles=handles, loc="outside right upper", frameon=True, facecolor="#dddddd")
    fig.suptitle(f"Test slices per site: ground truth and predictions (seed {first.seed}, selected round)")
    fig.savefig(path)
    return path

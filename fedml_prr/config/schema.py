"""The typed configuration of a run: what :func:`~fedml_prr.config.loading.load_config` builds.

Frozen dataclasses, each key checked on construction; nothing below the config layer reads
FedML's ``args``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Optional


class ConfigError(ValueError):
    """A configuration key is unknown, ill-typed or out of range."""


@dataclass(frozen=True)
class TrainSchedule:
    """Optimisation schedule shared by every algorithm (FedML ``train_args``).

    ``rounds`` communication rounds of ``epochs`` local epochs each (the paper: 50 x 5).  SGD
    with ``learning_rate`` multiplied by ``lr_decay_factor`` every ``lr_decay_every`` rounds;
    optimizers are re-created at every round start (reference behaviour).
    """

    rounds: int = 50
    epochs: int = 5
    batch_size: int = 16
    learning_rate: float = 1e-2
    weight_decay: float = 1e-6
    momentum: float = 0.0
    lr_decay_every: int = 5
    lr_decay_factor: float = 0.5

    def learning_rate_at(self, round_idx: int) -> float:
        return self.learning_rate * self.lr_decay_factor ** (round_idx // self.lr_decay_every)


ENGINES = ("loop", "batched")
CONV_MODES = ("auto", "grouped", "per_slot")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class EngineOptions:
    """How local training computes (``prr_engine``, ``prr_bf16``, ``prr_channels_last``, ``prr_conv_mode``,
    ``prr_compile``, ``prr_compile_mode``).

    Attributes
    ----------
    engine:
        ``loop``: each client trains on its own, one after the other; ``batched``: the
        single-process runtime trains all clients' models as one computation
        (:mod:`fedml_prr.training.batched`; same results up to float summation order).
    bf16:
        Batched engine only: bfloat16 autocast of forward and backward (weights, optimizer,
        losses and BatchNorm buffers stay float32).
    channels_last:
        Batched engine only: channels-last activations.
    conv_mode:
        Batched engine only: ``grouped`` (one grouped convolution for all models), ``per_slot``
        (one convolution per model) or ``auto`` (grouped on CUDA, per-slot on CPU, where oneDNN's
        grouped convolutions are slower than separate ones).
    compile:
        Batched engine only: run the stacked models' forward through ``torch.compile`` (off by
        default: compiling takes minutes and pays off only on long runs; results change at the
        float-rounding level, as any kernel change does).
    compile_mode:
        ``torch.compile``'s mode when ``compile`` is on: ``default``, ``reduce-overhead`` (CUDA
        graphs), ``max-autotune`` or ``max-autotune-no-cudagraphs``.
    """

    engine: str = "loop"
    bf16: bool = False
    channels_last: bool = True
    conv_mode: str = "auto"
    compile: bool = False
    compile_mode: str = "default"

    def __post_init__(self) -> None:
        check(self.engine in ENGINES, f"prr_engine must be one of {ENGINES}, got {self.engine!r}")
        check(self.conv_mode in CONV_MODES, f"prr_conv_mode must be one of {CONV_MODES}, got {self.conv_mode!r}")
        check(self.compile_mode in COMPILE_MODES,
              f"prr_compile_mode must be one of {COMPILE_MODES}, got {self.compile_mode!r}")
        check(self.engine == "batched" or not self.bf16, "prr_bf16 needs prr_engine: batched")
        check(self.engine == "batched" or not self.compile, "prr_compile needs prr_engine: batched")

    def grouped(self, device_type: str) -> bool:
        """Whether the batched engine runs one grouped convolution per layer on ``device_type``."""
        return self.conv_mode == "grouped" or (self.conv_mode == "auto" and device_type == "cuda")


@dataclass(frozen=True)
class RunOptions:
    """This plugin's run-level keys (``prr_args``, each spelled ``prr_<name>``).

    Attributes
    ----------
    image_size:
        Side of the square images fed to the model (the paper: 128).
    dataset_options:
        Extra keyword arguments of the dataset factory (e.g. ``{"scale": 0.25}``).
    model_options:
        Extra keyword arguments of the model factory (e.g. ``{"width": 0.5}``).
    results_dir:
        Folder of the run's outputs (config, metrics, summary, checkpoints).
    device:
        ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda[:i]"``.
    eval_batch_size:
        Batch size of evaluation passes (no autograd).
    selection_fraction:
        Model selection takes the best mean validation macro-F1 among rounds
        ``>= selection_fraction * rounds`` (the paper: 0.8).
    threads:
        torch intra-op threads on CPU; 0 leaves torch's default.
    augment:
        Apply the reference training augmentation (spec section 4); ``false`` trains on the
        plain images (e.g. to compare with FedML's own trainers, which do not augment).

    The engine keys (``prr_engine``, ...) are :class:`EngineOptions`.
    """

    image_size: int = 128
    dataset_options: Dict[str, Any] = field(default_factory=dict)
    model_options: Dict[str, Any] = field(default_factory=dict)
    results_dir: str = "results/run"
    device: str = "auto"
    eval_batch_size: int = 256
    selection_fraction: float = 0.8
    threads: int = 0
    augment: bool = True

    def __post_init__(self) -> None:
        check(self.image_size >= 8, "prr_image_size must be at least 8")
        check(0.0 <= self.selection_fraction <= 1.0, "prr_selection_fraction must be in [0, 1]")
        check(self.eval_batch_size > 0, "prr_eval_batch_size must be positive")
        check(self.threads >= 0, "prr_threads must be >= 0")
        check(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
               f"prr_device must be 'auto', 'cpu' or 'cuda[:i]', got {self.device!r}")


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs, validated."""

    algorithm: str
    dataset: str
    model: str
    seed: int
    schedule: TrainSchedule
    options: RunOptions
    engine_options: EngineOptions
    algorithm_params: Any  # the selected algorithm's params dataclass
    data_root: Optional[str] = None
    num_clients: Optional[int] = None  # client_num_in_total, checked against the data
    backend: str = "sp"
    fedml: Dict[str, Any] = field(default_factory=dict)  # every FedML key, for fedml.init

    def to_dict(self) -> Dict[str, Any]:
        """JSON-friendly view (what ``config.resolved.json`` stores)."""
        out = dataclasses.asdict(self)
        out["algorithm_params"] = dataclasses.asdict(self.algorithm_params)
        return out


def check(condition: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``condition``."""
    if not condition:
        raise ConfigError(message)

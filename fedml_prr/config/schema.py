"""The typed configuration of a run: what :func:`~fedml_prr.config.loading.load_config` builds.

Frozen dataclasses, each key checked on construction; nothing below the config layer reads
FedML's ``args``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple


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
    eval_every_epoch:
        Evaluate the reported model(s) (PRR: P_k and D_k) on the test split after every local epoch
        and right after each receive, into the round's record (the retrogress figure of
        ``fedml-prr diagnose``); costs one test pass per model and epoch.

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
    eval_every_epoch: bool = False

    def __post_init__(self) -> None:
        check(self.image_size >= 8, "prr_image_size must be at least 8")
        check(0.0 <= self.selection_fraction <= 1.0, "prr_selection_fraction must be in [0, 1]")
        check(self.eval_batch_size > 0, "prr_eval_batch_size must be positive")
        check(self.threads >= 0, "prr_threads must be >= 0")
        check(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
               f"prr_device must be 'auto', 'cpu' or 'cuda[:i]', got {self.device!r}")


DROPOUT_POLICIES = ("tolerate", "fail")


@dataclass(frozen=True)
class FederationOptions:
    """How the parties of a distributed run (MPI or gRPC) find, trust and wait for each other
    (``prr_`` keys; docs/distributed.md and docs/security.md).

    Attributes
    ----------
    tls_cert, tls_key, tls_ca:
        This party's certificate and private key and the federation CA's certificate (PEM files
        from ``fedml-prr provision``).  gRPC needs them unless ``insecure``.
    insecure:
        Plain TCP without TLS or party identities (``--insecure``); for a closed test network.
    listen_host:
        The address this party listens on; default: its own line of the address book.
    max_message_mb:
        Messages larger than this are refused by the receiver (and never sent).
    dropout:
        ``tolerate``: the server goes on without a client that is lost (no heartbeat, a failed
        send, a missed deadline) and takes it back when it rejoins; ``fail``: a lost client ends
        the run.
    min_clients:
        The fewest uploads a training step is aggregated from (default: half of the clients,
        rounded up).
    step_deadline_s:
        Seconds the server waits for a step's uploads (0: no deadline).
    heartbeat_timeout_s:
        Seconds without a heartbeat after which a gRPC client counts as lost.
    startup_timeout_s:
        Seconds the parties wait for each other at the start.
    clients, class_names:
        The silos' names (in rank order) and the class names: a server holds no data, so it learns
        the federation's shape from these (default: from the dataset's description, when the
        dataset can give it without reading images).
    """

    tls_cert: Optional[str] = None
    tls_key: Optional[str] = None
    tls_ca: Optional[str] = None
    insecure: bool = False
    listen_host: Optional[str] = None
    max_message_mb: float = 512.0
    dropout: str = "tolerate"
    min_clients: Optional[int] = None
    step_deadline_s: float = 3600.0
    heartbeat_timeout_s: float = 15.0
    startup_timeout_s: float = 600.0
    clients: Optional[Tuple[str, ...]] = None
    class_names: Optional[Tuple[str, ...]] = None

    def __post_init__(self) -> None:
        check(self.dropout in DROPOUT_POLICIES, f"prr_dropout must be one of {DROPOUT_POLICIES}, got {self.dropout!r}")
        check(self.max_message_mb > 0, "prr_max_message_mb must be positive")
        check(self.min_clients is None or self.min_clients >= 1, "prr_min_clients must be >= 1")
        check(self.step_deadline_s >= 0 and self.heartbeat_timeout_s > 0 and self.startup_timeout_s > 0,
              "prr_step_deadline_s must be >= 0, prr_heartbeat_timeout_s and prr_startup_timeout_s > 0")
        tls = [self.tls_cert, self.tls_key, self.tls_ca]
        check(all(v is None for v in tls) or all(v is not None for v in tls),
              "give prr_tls_cert, prr_tls_key and prr_tls_ca together (a party kit from `fedml-prr provision`)")

    def min_uploads(self, num_clients: int) -> int:
        """``min_clients``, or half of the clients rounded up; never more than there are."""
        return min(num_clients, self.min_clients if self.min_clients is not None else (num_clients + 1) // 2)


#: FedML 0.9.6's ``tracking_args`` keys: they change what a run logs, never what it trains, so a run
#: may be resumed (or a comparison's finished run reused) with other values
TRACKING_KEYS = ("enable_tracking", "log_file_dir", "run_name", "enable_wandb", "wandb_key", "wandb_entity",
                 "wandb_project", "wandb_name", "mlops_run_name")


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
    federation: FederationOptions = field(default_factory=FederationOptions)
    data_root: Optional[str] = None
    num_clients: Optional[int] = None  # client_num_in_total, checked against the data
    #: client_num_per_round (None: not set); below the number of clients, each round trains a
    #: sample of them (fedml_prr.training.sampling)
    clients_per_round: Optional[int] = None
    backend: str = "sp"
    fedml: Dict[str, Any] = field(default_factory=dict)  # every FedML key, for fedml.init

    @property
    def tracking(self) -> bool:
        """``tracking_args: enable_tracking``: write TensorBoard event files of the run's per-client
        curves under ``<results_dir>/tensorboard/`` (FedML's own tracking stays off: no network)."""
        return bool(self.fedml.get("enable_tracking", False))

    def to_dict(self) -> Dict[str, Any]:
        """JSON-friendly view (what ``config.resolved.json`` stores)."""
        out = dataclasses.asdict(self)
        out["algorithm_params"] = dataclasses.asdict(self.algorithm_params)
        return out


def check(condition: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``condition``."""
    if not condition:
        raise ConfigError(message)

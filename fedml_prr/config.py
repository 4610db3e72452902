"""The one typed, validated configuration object of a run.

A run is described by a FedML YAML (``common_args``, ``data_args``, ``train_args``, ...) plus a
``prr_args`` section holding this plugin's keys, every one prefixed ``prr_``.  :func:`load_config`
reads such a mapping once, checks every key it knows (type and range), refuses unknown ``prr_``
keys with the list of valid ones, and returns a frozen :class:`RunConfig`.  Nothing below the
edge reads FedML's ``args``.  Algorithm-specific hyper-parameters are dataclasses registered
with each algorithm (see :mod:`fedml_prr.algorithms`); their fields are ``prr_<field>`` keys.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Type, TypeVar

#: option mappings that ``presets`` merge into instead of replacing
MERGED_OPTION_KEYS = ("prr_model_options", "prr_dataset_options")

#: FedML keys this plugin reads, with their type (all others are passed to FedML untouched).
FEDML_KEYS: Dict[str, type] = {
    "training_type": str,
    "random_seed": int,
    "dataset": str,
    "data_cache_dir": str,
    "model": str,
    "federated_optimizer": str,
    "client_num_in_total": int,
    "client_num_per_round": int,
    "comm_round": int,
    "epochs": int,
    "batch_size": int,
    "client_optimizer": str,
    "learning_rate": float,
    "weight_decay": float,
    "momentum": float,
    "using_gpu": bool,
    "backend": str,
}


#: ``--paper-scale``: the paper's setup of each task (PRR_METHOD.md sections 4 and 5) on top of
#: any config: plain keys replace the config's; ``model_options`` / ``dataset_options`` are merged
#: into the config's options, and only for the models / datasets named here (the others take none).
PAPER_SCALE: Dict[str, Dict[str, Any]] = {
    "classification": {
        "keys": {"prr_image_size": 128, "comm_round": 50, "epochs": 5, "batch_size": 16, "learning_rate": 0.01,
                 "prr_lr_decay_every": 5, "prr_cpa_init_rounds": 15, "prr_fedrep_head_epochs": 10},
        "model_options": {"vgg16_slim": {"width": 1.0}},
        "dataset_options": {"derm_synthetic": {"scale": 1.0}},
    },
    "segmentation": {
        "keys": {"prr_image_size": 256, "comm_round": 20, "epochs": 5, "batch_size": 8, "learning_rate": 1e-3,
                 "prr_lr_decay_every": 5},
        "model_options": {},
        "dataset_options": {},
    },
}


def paper_scale_preset(task: str, *, dataset: str, model: str) -> Dict[str, Any]:
    """The ``--paper-scale`` keys of ``task`` for this dataset and model (see :data:`PAPER_SCALE`)."""
    preset = PAPER_SCALE[task]
    keys = dict(preset["keys"])
    for key, by_name, name in (("prr_model_options", preset["model_options"], model),
                               ("prr_dataset_options", preset["dataset_options"], dataset)):
        options = by_name.get(str(name).lower())
        if options:
            keys[key] = dict(options)
    return keys


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


@dataclass(frozen=True)
class EngineOptions:
    """How local training computes (``prr_engine``, ``prr_bf16``, ``prr_channels_last``, ``prr_conv_mode``).

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
    """

    engine: str = "loop"
    bf16: bool = False
    channels_last: bool = True
    conv_mode: str = "auto"

    def __post_init__(self) -> None:
        _check(self.engine in ENGINES, f"prr_engine must be one of {ENGINES}, got {self.engine!r}")
        _check(self.conv_mode in CONV_MODES, f"prr_conv_mode must be one of {CONV_MODES}, got {self.conv_mode!r}")
        _check(self.engine == "batched" or not self.bf16, "prr_bf16 needs prr_engine: batched")

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
        _check(self.image_size >= 8, "prr_image_size must be at least 8")
        _check(0.0 <= self.selection_fraction <= 1.0, "prr_selection_fraction must be in [0, 1]")
        _check(self.eval_batch_size > 0, "prr_eval_batch_size must be positive")
        _check(self.threads >= 0, "prr_threads must be >= 0")
        _check(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
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


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


T = TypeVar("T")

#: scalar annotation -> (accepted python types, wording of the error); bools are never numbers
_SCALARS = {bool: ((bool,), "true or false"), int: ((int,), "an integer"),
            float: ((int, float), "a number"), str: ((str,), "a string")}


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against ``annotation``; ints are accepted where floats are expected."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union:  # Optional[X]
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return None if value is None else _coerce(key, value, args[0])
    if origin in (dict, Dict) or annotation in (dict, Dict):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a mapping, got {type(value).__name__} {value!r}")
        return dict(value)
    if origin in (tuple, Tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return tuple(value)
    if annotation in _SCALARS:
        accepted, description = _SCALARS[annotation]
        if isinstance(value, bool) != (annotation is bool) or not isinstance(value, accepted):
            raise ConfigError(f"{key} must be {description}, got {value!r}")
        return float(value) if annotation is float else value
    return value


def build_dataclass(cls: Type[T], values: Mapping[str, Any], *, prefix: str = "prr_") -> T:
    """Instantiate ``cls`` from ``{prefix + field: value}``, type-checking each value."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        if key in values:
            kwargs[f.name] = _coerce(key, values[key], hints[f.name])
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from exc


def field_keys(cls: type, prefix: str = "prr_") -> Tuple[str, ...]:
    return tuple(prefix + f.name for f in dataclasses.fields(cls))


def parse_assignments(items: Sequence[str]) -> Dict[str, Any]:
    """``--set`` items ``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}`` (values parsed as YAML scalars)."""
    import yaml

    out: Dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError as error:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({str(error).splitlines()[0]})") from None
    return out


def flatten_sections(document: Mapping[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Split a FedML YAML mapping into (FedML keys, ``prr_args`` keys).

    FedML flattens every section into one namespace (last wins); we do the same for its
    sections but keep ``prr_args`` apart so its keys can be checked strictly.
    """
    fedml_keys: Dict[str, Any] = {}
    prr_keys: Dict[str, Any] = {}
    for section, content in document.items():
        if content is None:
            continue
        if not isinstance(content, Mapping):
            raise ConfigError(f"section {section!r} must be a mapping of keys, got {content!r}")
        target = prr_keys if section == "prr_args" else fedml_keys
        target.update(content)
    for key in fedml_keys:
        if str(key).startswith("prr_"):
            raise ConfigError(f"{key!r} belongs in the prr_args section")
    return fedml_keys, prr_keys


def load_config(
    document: Mapping[str, Any],
    *,
    algorithm_params: Mapping[str, type],
    algorithm_names: Iterable[str],
    overrides: Optional[Mapping[str, Any]] = None,
    presets: Optional[Mapping[str, Any]] = None,
    prr_defaults: Optional[Mapping[str, Any]] = None,
) -> RunConfig:
    """Validate a FedML YAML document into a :class:`RunConfig`.

    Parameters
    ----------
    document:
        The parsed YAML (section name -> mapping).
    algorithm_params:
        Canonical algorithm name -> its params dataclass (from the algorithm registry).
    algorithm_names:
        Every accepted algorithm name, for the error message.
    overrides:
        ``key -> value`` applied after the YAML (``--set``); a key is routed to ``prr_args``
        when it starts with ``prr_``.
    presets:
        Keys applied between the YAML and ``overrides`` (``--paper-scale``,
        :func:`paper_scale_preset`); its ``prr_model_options`` / ``prr_dataset_options`` are
        merged into the YAML's, key by key.
    prr_defaults:
        ``prr_`` keys used when neither the YAML nor ``overrides`` sets them (the dataset's task
        defaults, e.g. PRR's segmentation variant).
    """
    fedml_keys, prr_keys = flatten_sections(document)
    for key, value in (presets or {}).items():
        target = prr_keys if key.startswith("prr_") else fedml_keys
        if key in MERGED_OPTION_KEYS and isinstance(target.get(key), Mapping):
            value = {**target[key], **value}
        target[key] = value
    for key, value in (overrides or {}).items():
        (prr_keys if key.startswith("prr_") else fedml_keys)[key] = value
    for key, value in (prr_defaults or {}).items():
        prr_keys.setdefault(key, value)

    valid_prr = set(field_keys(RunOptions)) | set(field_keys(EngineOptions)) | {
        "prr_data_root", "prr_lr_decay_every", "prr_lr_decay_factor"}
    for params_cls in algorithm_params.values():
        valid_prr |= set(field_keys(params_cls))
    unknown = sorted(k for k in prr_keys if k not in valid_prr)
    if unknown:
        raise ConfigError(f"unknown prr_args key(s) {unknown}; valid keys: {', '.join(sorted(valid_prr))}")
    for key, expected in FEDML_KEYS.items():
        if key in fedml_keys and fedml_keys[key] is not None:
            fedml_keys[key] = _coerce(key, fedml_keys[key], expected)

    name_by_lower = {n.lower(): n for n in algorithm_params}
    requested = str(fedml_keys.get("federated_optimizer", "PRR"))
    if requested.lower() not in name_by_lower:
        raise ConfigError(f"unknown federated_optimizer {requested!r}; known algorithms: {', '.join(algorithm_names)}")
    algorithm = name_by_lower[requested.lower()]

    schedule_values = {k: fedml_keys[k] for k in ("batch_size", "learning_rate", "weight_decay", "momentum")
                       if k in fedml_keys}
    schedule_values["rounds"] = fedml_keys.get("comm_round", TrainSchedule.rounds)
    schedule_values["epochs"] = fedml_keys.get("epochs", TrainSchedule.epochs)
    for key in ("lr_decay_every", "lr_decay_factor"):
        if "prr_" + key in prr_keys:
            schedule_values[key] = _coerce("prr_" + key, prr_keys["prr_" + key], typing.get_type_hints(TrainSchedule)[key])
    schedule = TrainSchedule(**schedule_values)
    _check(schedule.rounds >= 1, "comm_round must be >= 1")
    _check(schedule.epochs >= 1, "epochs must be >= 1")
    _check(schedule.batch_size >= 1, "batch_size must be >= 1")
    _check(schedule.learning_rate > 0, "learning_rate must be positive")
    _check(schedule.lr_decay_every >= 1, "prr_lr_decay_every must be >= 1")
    optimizer = str(fedml_keys.get("client_optimizer", "sgd")).lower()
    _check(optimizer == "sgd", f"client_optimizer {optimizer!r} is not supported; use sgd (the paper's optimizer)")
    total, per_round = fedml_keys.get("client_num_in_total"), fedml_keys.get("client_num_per_round")
    _check(per_round is None or total is None or per_round == total,
           f"client_num_per_round ({per_round}) must equal client_num_in_total ({total}): "
           "every client takes part in every round")

    options = build_dataclass(RunOptions, prr_keys)
    engine_options = build_dataclass(EngineOptions, prr_keys)
    backend = str(fedml_keys.get("backend", "sp"))
    _check(engine_options.engine == "loop" or backend == "sp",
           f"prr_engine: batched trains every client in one process and needs backend: sp, got {backend!r}")
    params_cls = algorithm_params[algorithm]
    for f in dataclasses.fields(params_cls):  # a FedML key of the same name (fedprox_mu) is accepted too
        if f.name in fedml_keys and "prr_" + f.name not in prr_keys:
            prr_keys["prr_" + f.name] = fedml_keys[f.name]
    params = build_dataclass(params_cls, prr_keys)
    return RunConfig(
        algorithm=algorithm,
        dataset=str(fedml_keys.get("dataset", "derm_synthetic")),
        model=str(fedml_keys.get("model", "vgg16_slim")),
        seed=int(fedml_keys.get("random_seed", 0)),
        schedule=schedule,
        options=options,
        engine_options=engine_options,
        algorithm_params=params,
        data_root=prr_keys.get("prr_data_root", fedml_keys.get("data_cache_dir")),
        num_clients=total,
        backend=backend,
        fedml=fedml_keys,
    )

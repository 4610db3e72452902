"""Reading a FedML YAML document into the one :class:`~fedml_prr.config.schema.RunConfig`.

A run is described by a FedML YAML (``common_args``, ``data_args``, ``train_args``, ...) plus a
``prr_args`` section holding this plugin's keys, every one prefixed ``prr_``.  :func:`load_config`
reads such a mapping once, checks every key it knows (type and range), refuses unknown ``prr_``
keys with the list of valid ones and FedML-section keys that neither this plugin nor FedML reads,
and returns a frozen :class:`RunConfig`; :func:`read_config_file` reads the file (YAML errors
name its line).  Algorithm-specific hyper-parameters are dataclasses declared for each algorithm
in :mod:`fedml_prr.config.algorithms`; their fields are ``prr_<field>`` keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import typing
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Type, TypeVar, Union

from .fedml_keys import fedml_own_keys
from .presets import MERGED_OPTION_KEYS
from .schema import ConfigError, EngineOptions, FederationOptions, RunConfig, RunOptions, TrainSchedule, check

logger = logging.getLogger(__name__)

_WARNED: set = set()  # warnings about unused FedML keys already logged by this process

#: FedML keys this plugin reads, with their type.  Any other key of a FedML section must be one of
#: FedML's own (:mod:`.fedml_keys`; accepted with a warning, passed to FedML untouched) or is an error.
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
    "grpc_ipconfig_path": str,
    "enable_tracking": bool,  # tracking_args: TensorBoard event files of the run (RunConfig.tracking)
}


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


def _unique_key_loader():
    """A YAML SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} is given twice (lines {seen[key] + 1} and "
                        f"{key_node.start_mark.line + 1}); keep one", key_node.start_mark)
                seen[key] = key_node.start_mark.line
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def read_config_file(path: Union[str, Path]) -> Dict[str, Any]:
    """Parse a FedML YAML config file into its mapping of sections.

    Raises
    ------
    FileNotFoundError
        No such file.
    ConfigError
        A YAML syntax error or a key given twice (naming the file, line and column), a document
        that is not a mapping of sections, or one without any key (an empty file would start a
        full default run).
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        document = yaml.load(path.read_text(), Loader=_unique_key_loader())
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text file; give a FedML YAML config") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else str(path)
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        context, start = getattr(error, "context", None), getattr(error, "context_mark", None)
        if context and start is not None:
            context += f" at line {start.line + 1}, column {start.column + 1}"
        raise ConfigError(f"{where}: invalid YAML: {problem}" + (f" ({context})" if context else "")) from None
    if document is not None and not isinstance(document, Mapping):
        raise ConfigError(f"{path}: a FedML config must be a mapping of sections (common_args:, train_args:, "
                          f"prr_args:, ...), got {type(document).__name__}")
    if not document or not any(document.values()):
        raise ConfigError(f"{path} holds no key; a run needs at least its dataset, model and algorithm "
                          "(start from configs/prr_derm_synthetic.yaml, docs/configuration.md)")
    return dict(document)


def flatten_sections(document: Mapping[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Split a FedML YAML mapping into (FedML keys, ``prr_args`` keys).

    FedML flattens every section into one namespace (last wins); we do the same for its
    sections but keep ``prr_args`` apart so its keys can be checked strictly.
    """
    fedml_keys: Dict[str, Any] = {}
    prr_keys: Dict[str, Any] = {}
    sections: Dict[str, str] = {}
    for section, content in document.items():
        if content is None:
            continue
        if not isinstance(content, Mapping):
            raise ConfigError(f"section {section!r} must be a mapping of keys, got {content!r}")
        for key in content:
            if key in sections:
                raise ConfigError(f"key {key!r} is in both {sections[key]} and {section}; keep one")
            sections[key] = section
        target = prr_keys if section == "prr_args" else fedml_keys
        target.update(content)
    for key in fedml_keys:
        if str(key).startswith("prr_"):
            raise ConfigError(f"{key!r} belongs in the prr_args section")
    return fedml_keys, prr_keys


def _placed(keys: Sequence[str], origins: Mapping[str, str]) -> str:
    """``['a'] in train_args of x.yaml`` (every place the keys come from)."""
    places = sorted({origins[k] for k in keys if k in origins})
    return f"{list(keys)}" + (f" in {' and '.join(places)}" if places else "")


def _did_you_mean(keys: Sequence[str], valid: Iterable[str]) -> str:
    """``" (did you mean 'epochs'?)"`` for the nearest valid spelling of each key, if any is near."""
    valid = sorted(valid)
    guesses = {k: m[0] for k in keys for m in [difflib.get_close_matches(k, valid, n=1)] if m}
    if not guesses:
        return ""
    if len(keys) == 1:
        return f" (did you mean {next(iter(guesses.values()))!r}?)"
    return f" (did you mean {', '.join(f'{m!r} for {k!r}' for k, m in guesses.items())}?)"


def _check_fedml_keys(fedml_keys: Mapping[str, Any], origins: Mapping[str, str],
                      algorithm_params: Mapping[str, type], *, warn_unused: bool) -> None:
    """Refuse FedML-section keys that neither this plugin nor FedML reads; warn about FedML's own
    keys this plugin does not use (:mod:`fedml_prr.config.fedml_keys`)."""
    ours = set(FEDML_KEYS)
    for params_cls in algorithm_params.values():  # a FedML key named as a hyper-parameter (fedprox_mu)
        ours |= {f.name for f in dataclasses.fields(params_cls)}
    others = sorted(k for k in fedml_keys if k not in ours)
    if not others:
        return
    fedml_own = fedml_own_keys()
    if fedml_own is None:
        logger.warning("FedML is not installed, so these keys could not be checked: %s", _placed(others, origins))
        return
    unknown = [k for k in others if k not in fedml_own]
    if unknown:
        raise ConfigError(f"unknown key(s) {_placed(unknown, origins)}{_did_you_mean(unknown, ours | fedml_own)}: "
                          f"neither fedml_prr nor FedML reads {'it' if len(unknown) == 1 else 'them'}; fix the "
                          "spelling or remove it (docs/configuration.md lists the keys)")
    message = f"FedML key(s) {_placed(others, origins)} are not read by fedml_prr (its algorithms, data and " \
              "schedule ignore them)"
    if warn_unused and message not in _WARNED:  # once per process: compare validates one config per run
        _WARNED.add(message)
        logger.warning(message)


def load_config(
    document: Mapping[str, Any],
    *,
    algorithm_params: Mapping[str, type],
    algorithm_names: Iterable[str],
    overrides: Optional[Mapping[str, Any]] = None,
    presets: Optional[Mapping[str, Any]] = None,
    prr_defaults: Optional[Mapping[str, Any]] = None,
    source: Optional[str] = None,
    warn_unused_fedml_keys: bool = True,
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
    source:
        Where ``document`` came from (its file), named in errors about its keys.
    warn_unused_fedml_keys:
        Log a warning naming the FedML keys this plugin does not use (off when FedML's own
        implementation runs, which reads them).

    Raises
    ------
    ConfigError
        A key in a FedML section that neither this plugin nor FedML reads
        (:mod:`fedml_prr.config.fedml_keys`), an unknown ``prr_`` key, a key of the wrong type or
        out of range; each message names the key and where it came from.
    """
    fedml_keys, prr_keys = flatten_sections(document)
    origins = {key: f"{section} of {source}" if source else section
               for section, content in document.items() if isinstance(content, Mapping) for key in content}
    origins.update({key: "--paper-scale" for key in presets or {}})
    origins.update({key: "--set" for key in overrides or {}})
    for key, value in (presets or {}).items():
        target = prr_keys if key.startswith("prr_") else fedml_keys
        if key in MERGED_OPTION_KEYS and isinstance(target.get(key), Mapping):
            value = {**target[key], **value}
        target[key] = value
    for key, value in (overrides or {}).items():
        (prr_keys if key.startswith("prr_") else fedml_keys)[key] = value
    for key, value in (prr_defaults or {}).items():
        prr_keys.setdefault(key, value)

    valid_prr = set(field_keys(RunOptions)) | set(field_keys(EngineOptions)) | set(field_keys(FederationOptions)) | {
        "prr_data_root", "prr_lr_decay_every", "prr_lr_decay_factor"}
    for params_cls in algorithm_params.values():
        valid_prr |= set(field_keys(params_cls))
    unknown = sorted(k for k in prr_keys if k not in valid_prr)
    if unknown:
        raise ConfigError(f"unknown prr_args key(s) {_placed(unknown, origins)}{_did_you_mean(unknown, valid_prr)}; "
                          f"valid keys: {', '.join(sorted(valid_prr))}")
    _check_fedml_keys(fedml_keys, origins, algorithm_params, warn_unused=warn_unused_fedml_keys)
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
    check(schedule.rounds >= 1, "comm_round must be >= 1")
    check(schedule.epochs >= 1, "epochs must be >= 1")
    check(schedule.batch_size >= 1, "batch_size must be >= 1")
    check(schedule.learning_rate > 0, "learning_rate must be positive")
    check(schedule.lr_decay_every >= 1, "prr_lr_decay_every must be >= 1")
    optimizer = str(fedml_keys.get("client_optimizer", "sgd")).lower()
    check(optimizer == "sgd", f"client_optimizer {optimizer!r} is not supported; use sgd (the paper's optimizer)")
    total, per_round = fedml_keys.get("client_num_in_total"), fedml_keys.get("client_num_per_round")
    check(per_round is None or per_round >= 1, f"client_num_per_round must be >= 1, got {per_round}")
    check(per_round is None or total is None or per_round <= total,
           f"client_num_per_round ({per_round}) must not exceed client_num_in_total ({total})")

    options = build_dataclass(RunOptions, prr_keys)
    engine_options = build_dataclass(EngineOptions, prr_keys)
    federation = build_dataclass(FederationOptions, prr_keys)
    backend = str(fedml_keys.get("backend", "sp"))
    check(engine_options.engine == "loop" or backend == "sp",
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
        federation=federation,
        algorithm_params=params,
        data_root=prr_keys.get("prr_data_root", fedml_keys.get("data_cache_dir")),
        num_clients=total,
        clients_per_round=per_round,
        backend=backend,
        fedml=fedml_keys,
    )

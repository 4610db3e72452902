"""Python API: run any registered algorithm from a config, or on your own per-client Datasets.

Example (bring your own data)::

    from fedml_prr.api import run_federation
    from fedml_prr.data import federation_from_datasets

    federation = federation_from_datasets(
        {"hospital_a": {"train": ds_a_train, "valid": ds_a_valid, "test": ds_a_test},
         "hospital_b": {"train": ds_b_train, "valid": ds_b_valid, "test": ds_b_test}},
        class_names=["nv", "bkl", "mel"], image_size=64)
    result = run_federation(federation, algorithm="PRR", config="configs/prr_derm_synthetic.yaml",
                            overrides={"comm_round": 20, "prr_results_dir": "results/mine"})
    print(result.summary["selected"]["mean"]["macro_f1"])
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from .algorithms import ALGORITHMS
from .config import ConfigError, RunConfig, flatten_sections, load_config, paper_scale_preset, read_config_file
from .data import DATASETS, build_federation, dataset_options, dataset_task, describe_dataset
from .data.datasets import accepted_options
from .data.federation import ClientData, Federation, FederationInfo
from .data.partition import split_partition_options
from .models import check_image_size
from .registry import UnknownOptionError, check_options

logger = logging.getLogger(__name__)

ConfigSource = Union[str, Path, Mapping[str, Any], None]

def read_yaml(path: Union[str, Path]) -> Mapping[str, Any]:
    """Parse a FedML YAML file (:func:`fedml_prr.config.read_config_file`: a clear error for a
    missing file, invalid YAML, a non-mapping or an empty document)."""
    return read_config_file(path)


def make_config(source: ConfigSource = None, *, algorithm: Optional[str] = None,
                overrides: Optional[Mapping[str, Any]] = None, paper_scale: bool = False,
                warn_unused_fedml_keys: bool = True, registered_dataset: bool = True,
                name: Optional[str] = None) -> RunConfig:
    """Validate a config (YAML path, parsed mapping or None for all defaults) into a RunConfig.

    Parameters
    ----------
    algorithm:
        Overrides ``federated_optimizer``.
    overrides:
        ``--set`` keys, applied last.
    paper_scale:
        Apply the paper's setup of the dataset's task (:data:`fedml_prr.config.PAPER_SCALE`)
        between the YAML and ``overrides``; model and dataset options are merged, not replaced.
    warn_unused_fedml_keys:
        Warn about FedML keys the plugin does not read (off for FedML's own implementations).
    registered_dataset:
        ``False`` when the data is not the config's registered dataset (:func:`run_federation`):
        its name and options are then not checked.
    name:
        The file a parsed ``source`` was read from (named by errors).

    The algorithm's defaults for the dataset's task (PRR's segmentation variant,
    ``AlgorithmSpec.task_defaults``) fill every key the YAML and ``overrides`` leave unset.  Besides
    every key's name, type and range, the dataset's options and the model's options are checked
    against the registries, and the image size against the model's smallest input, before anything
    is built (:func:`check_registered`).
    """
    path = str(source) if isinstance(source, (str, Path)) else name
    document = {} if source is None else (read_yaml(source) if isinstance(source, (str, Path)) else source)
    merged = dict(overrides or {})
    if algorithm is not None:
        merged["federated_optimizer"] = algorithm
    fedml_keys = flatten_sections(document)[0]
    dataset = str(merged.get("dataset", fedml_keys.get("dataset", "derm_synthetic")))
    model = str(merged.get("model", fedml_keys.get("model", "vgg16_slim")))
    name = str(merged.get("federated_optimizer", fedml_keys.get("federated_optimizer", "PRR")))
    task = dataset_task(dataset)
    params = {ALGORITHMS.canonical_name(n): ALGORITHMS.get(n).params for n in ALGORITHMS.names()}
    defaults = ALGORITHMS.get(name).task_defaults.get(task) if name in ALGORITHMS else None
    presets = paper_scale_preset(task, dataset=dataset, model=model) if paper_scale else None
    config = load_config(document, algorithm_params=params, algorithm_names=ALGORITHMS.names(), overrides=merged,
                         presets=presets, prr_defaults=defaults, source=path,
                         warn_unused_fedml_keys=warn_unused_fedml_keys)
    check_registered(config, dataset=registered_dataset)
    return config


def check_registered(config: RunConfig, *, dataset: bool = True) -> None:
    """The config's dataset (unless ``dataset`` is False) and model against their registries
    (``ConfigError``, one line each): a known dataset with known options, a known model with known
    options, and an image size the model can take (:func:`fedml_prr.models.check_image_size`)."""
    try:
        if dataset:
            DATASETS.get(config.dataset)
            check_options("dataset", config.dataset, config.options.dataset_options,
                          accepted_options(config.dataset))
        check_image_size(config.model, config.options.image_size, **config.options.model_options)
    except KeyError as error:  # an unknown dataset or model (the message lists the known ones)
        raise ConfigError(error.args[0]) from None
    except UnknownOptionError as error:
        key = "prr_model_options" if error.kind == "model" else "prr_dataset_options"
        raise ConfigError(f"{key}: {error}") from None
    except ValueError as error:  # an image size the model cannot take (the message names prr_image_size)
        raise ConfigError(str(error)) from None


def _dataset_options(config: RunConfig) -> dict:
    """The dataset's options of a run: ``prr_dataset_options``, the root (``prr_data_root``) and,
    when the config names them, the class names (``prr_class_names``), so that every runtime
    numbers the classes the same way."""
    options = dict(config.options.dataset_options)
    if config.data_root is not None and "root" in dataset_options(config.dataset):
        options.setdefault("root", config.data_root)
    if config.federation.class_names is not None:
        options.setdefault("class_names", list(config.federation.class_names))
    return options


def federation_for(config: RunConfig) -> Federation:
    """Build the config's registered dataset."""
    return build_federation(config.dataset, seed=config.seed, image_size=config.options.image_size,
                            **_dataset_options(config))


def run(config: RunConfig, *, federation: Optional[Federation] = None, resume: bool = False,
        overwrite: bool = False, progress: bool = False):
    """Run ``config`` in one process (on ``federation`` if given, else the config's dataset)."""
    from .runtime.sp import run_single_process

    if config.backend == "MPI":
        raise ConfigError("backend MPI runs one process per party: launch it with "
                          "`fedml-prr mpirun -np K+1 --cf CONFIG` (or mpirun ... python -m fedml_prr --cf CONFIG)")
    if config.backend == "GRPC":
        raise ConfigError("backend GRPC runs one process per party: start `fedml-prr run --cf CONFIG --role server` "
                          "and `--role client --rank k` for k = 1..K (run_scripts/run_grpc_federation.py does it "
                          "on one machine)")
    if config.backend != "sp":
        raise ConfigError(f"backend {config.backend!r} is not supported; use sp, MPI or GRPC")
    return run_single_process(config, federation if federation is not None else federation_for(config),
                              resume=resume, overwrite=overwrite, progress=progress)


def federation_info(config: RunConfig) -> FederationInfo:
    """The federation's shape without reading any data (what a server needs): from the config's
    ``prr_clients`` and ``prr_class_names`` when given, else from the dataset's description
    (:func:`fedml_prr.data.describe_dataset`)."""
    f = config.federation
    if f.clients is not None and f.class_names is not None:
        return FederationInfo(config.dataset, dataset_task(config.dataset), tuple(f.class_names), tuple(f.clients))
    info = describe_dataset(config.dataset, seed=config.seed, **_dataset_options(config))
    if info is None:
        try:
            info = federation_for(config).info
        except (FileNotFoundError, ValueError) as error:
            raise ConfigError(f"dataset {config.dataset!r} cannot name its clients and classes without its data, which "
                              f"this party does not hold ({str(error).splitlines()[0]}); set prr_clients (the silos' "
                              "names in rank order) and prr_class_names in prr_args") from None
        logger.warning("read dataset %r to learn its clients and classes; a server that holds no data needs "
                       "prr_clients: %s and prr_class_names: %s in prr_args", config.dataset, list(info.clients),
                       list(info.class_names))
    if f.clients is not None and tuple(f.clients) != info.clients:
        raise ConfigError(f"prr_clients {list(f.clients)} differ from dataset {config.dataset!r}'s clients "
                          f"{list(info.clients)}")
    return info


def client_data(config: RunConfig, silo: int) -> ClientData:
    """Silo ``silo``'s own data, read from this party's copy of the dataset, which needs to hold no
    other silo's files.  (A label partition pools every client's images: it is a simulation, and
    each party builds the whole pool.)"""
    info = federation_info(config)
    if not 0 <= silo < len(info.clients):
        raise ValueError(f"silo {silo} is outside 0..{len(info.clients) - 1}")
    options = _dataset_options(config)
    if split_partition_options(options)[0] is not None:
        return federation_for(config).clients[silo]
    options.update(clients=[info.clients[silo]], class_names=list(info.class_names))
    federation = build_federation(config.dataset, seed=config.seed, image_size=config.options.image_size, **options)
    return federation.clients[0]


def run_party(config: RunConfig, *, rank: int, backend: str, comm=None, federation: Optional[Federation] = None,
              resume: bool = False, overwrite: bool = False):
    """This process's part of a distributed run: rank 0 is the server (it holds no data and returns
    the run's result), rank ``k`` the client of silo ``k - 1`` (it holds only its own data; None)."""
    from .runtime.distributed import run_client, run_server

    info = federation.info if federation is not None else federation_info(config)
    if rank == 0:
        return run_server(config, info, backend=backend, comm=comm, resume=resume, overwrite=overwrite)
    if not 1 <= rank <= len(info.clients):
        raise ValueError(f"rank {rank} is outside 0..{len(info.clients)} (0 = server, 1..{len(info.clients)} = clients)")
    data = federation.clients[rank - 1] if federation is not None else client_data(config, rank - 1)
    return run_client(config, info, data, rank=rank, backend=backend, comm=comm, resume=resume, overwrite=overwrite)


def run_federation(federation: Federation, *, algorithm: str = "PRR", config: ConfigSource = None,
                   overrides: Optional[Mapping[str, Any]] = None, resume: bool = False, overwrite: bool = False,
                   progress: bool = False):
    """Run a registered algorithm on a federation of your own (see the module docstring)."""
    merged = dict(overrides or {})
    merged.setdefault("prr_image_size", federation.image_size)
    cfg = make_config(config, algorithm=algorithm, overrides=merged, registered_dataset=False)
    if cfg.options.image_size != federation.image_size:
        raise ValueError(f"prr_image_size is {cfg.options.image_size} but the federation's images are "
                         f"{federation.image_size} px; build the federation with image_size={cfg.options.image_size}")
    return run(cfg, federation=federation, resume=resume, overwrite=overwrite, progress=progress)


def install() -> None:
    """Make FedML's own entry points run this plugin (see :mod:`fedml_prr.fedml_adapter.install`)."""
    from .fedml_adapter.install import PluginEntry, install as install_into_fedml

    install_into_fedml(PluginEntry(make_config=make_config, federation_for=federation_for, run=run,
                                   run_party=run_party))

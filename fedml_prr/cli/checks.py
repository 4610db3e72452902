"""What the command line checks before any heavy import, and how it reports a config error.

:func:`check_config` reads a config and checks every key's name, type and range without torch or
FedML (the config layer alone), so that ``fedml-prr run --cf bad.yaml`` answers at once; the
commands then import the heavy layers and check the config against the dataset and model
registries (:func:`fedml_prr.api.make_config`).
"""

from __future__ import annotations

import sys
from typing import Any, Dict, Mapping, Optional, Union

from ..config import FEDML_PREFIX, ConfigError, RunConfig, declared_params, load_config, read_config_file
from ..files import unwritable_folder
from .tables import fail

#: what a config or its files can raise, reported as one line with exit status 2
CONFIG_ERRORS = (ConfigError, KeyError, FileNotFoundError, ValueError)
#: what a run can raise because of its data or its results folder, reported as one line (exit 1)
RUN_ERRORS = (FileNotFoundError, FileExistsError, ValueError, KeyError, OSError)


def config_error(exc: BaseException) -> int:
    return fail(f"config error: {exc.args[0] if isinstance(exc, KeyError) else exc}", 2)


def known_algorithms() -> Dict[str, type]:
    """Canonical name -> hyper-parameters of every algorithm known here, without importing torch:
    the declared built-ins, plus any a script registered in this process before calling the CLI
    (it imported the algorithm registry to do so; tests/faulty_run.py)."""
    params = declared_params()
    registry = sys.modules.get("fedml_prr.algorithms.registry")
    if registry is not None:
        algorithms = registry.ALGORITHMS
        params.update({algorithms.canonical_name(n): algorithms.get(n).params for n in algorithms.names()})
    return params


def check_config(source: Union[str, Mapping[str, Any]], overrides: Mapping[str, Any], *,
                 algorithm: Optional[str] = None, warn_unused_fedml_keys: bool = True,
                 name: Optional[str] = None) -> RunConfig:
    """The config of ``source`` (a YAML path, or the document read from the file ``name``) with
    ``overrides`` checked without torch: the YAML, every key's name, type and range, the
    algorithm's name, and that its results folder can be written.

    The dataset's task defaults and ``--paper-scale`` are left to :func:`fedml_prr.api.make_config`
    (they need the dataset registry); so are the dataset's and the model's options.
    """
    document = read_config_file(source) if isinstance(source, str) else source
    path = source if isinstance(source, str) else name
    merged = dict(overrides)
    if algorithm is not None:
        merged["federated_optimizer"] = algorithm
    params = known_algorithms()
    config = load_config(document, algorithm_params=params, algorithm_names=sorted(params, key=str.lower),
                         overrides=merged, source=path, warn_unused_fedml_keys=warn_unused_fedml_keys)
    problem = unwritable_folder(config.options.results_dir)
    if problem:
        raise ConfigError(f"prr_results_dir {config.options.results_dir} cannot be written: {problem}; set "
                          "prr_results_dir to a folder you can write")
    return config


def native_algorithm(name: Optional[str]) -> Optional[str]:
    """``FedML:<name>`` -> FedML's own ``<name>`` (FedAvg or FedProx), else None."""
    if not name or not str(name).lower().startswith(FEDML_PREFIX):
        return None
    from ..fedml_adapter.fedml_native import NATIVE_MPI_ALGORITHMS

    wanted = str(name)[len(FEDML_PREFIX):]
    for known in NATIVE_MPI_ALGORITHMS:  # FedML is needed to run them: importing it here costs nothing more
        if known.lower() == wanted.lower():
            return known
    raise ConfigError(f"{name} is not available; FedML's own algorithms runnable here: "
                      f"{', '.join('FedML:' + a for a in NATIVE_MPI_ALGORITHMS)}")



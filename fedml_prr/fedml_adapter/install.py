"""``fedml_prr.install()``: FedML's own entry points run this plugin's algorithms, datasets and models.

After ``install()`` an unmodified FedML main script::

    args = fedml.init()
    device = fedml.device.get_device(args)
    dataset, output_dim = fedml.data.load(args)
    model = fedml.model.create(args, output_dim)
    FedMLRunner(args, device, dataset, model).run()

runs, with ``federated_optimizer: PRR`` (or any registered algorithm) in its YAML, our algorithm on
the runtime its YAML asks for: ``simulation`` + ``sp`` in this process, ``simulation`` + ``MPI``
under mpirun, ``cross_silo`` + ``GRPC``/``MPI`` as one party (``--rank``).  ``fedml-prr exec
SCRIPT ARGS`` installs and runs such a script unchanged.

What is patched (FedML 0.9.6 has no plugin registry; the originals stay reachable and every name
FedML knows still reaches FedML):

- ``fedml.init``: offline (no cloud config fetch, no environment probe; FEDML_NOTES.md);
- ``fedml.data.load``: one of our registered datasets (by ``dataset``) becomes FedML's 8-item
  dataset (loaders of float images) that also carries our federation (``.federation``);
- ``fedml.model.create``: one of our registered models (by ``model``), returning logits only as
  FedML's trainers expect;
- ``FedMLRunner``: a registered algorithm name runs through our runtimes; ``FedML:<name>``
  (e.g. ``FedML:FedAvg``) runs FedML's own implementation of ``<name>`` on the same data.

The run's configuration is read from the same YAML with our validation (``prr_args`` included);
FedML's ``args`` only contribute the process identity (rank, role, MPI communicator).  What runs a
run lives in the layers above this one; :func:`fedml_prr.install` hands it in as
:class:`PluginEntry`, so this module imports nothing above the FedML transports.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ..config.fedml_keys import FEDML_PREFIX

logger = logging.getLogger(__name__)

_installed = False


@dataclass(frozen=True)
class PluginEntry:
    """The plugin's entry points that FedML's patched functions call (from :mod:`fedml_prr.api`).

    Attributes
    ----------
    make_config:
        ``make_config(yaml_path, overrides=...) -> RunConfig``.
    federation_for:
        ``federation_for(config) -> Federation``.
    run:
        ``run(config, federation=..., overwrite=...)``: a single-process run.
    run_party:
        ``run_party(config, rank=..., backend=..., comm=..., federation=..., overwrite=...)``: one
        party of a distributed run.
    """

    make_config: Callable[..., Any]
    federation_for: Callable[..., Any]
    run: Callable[..., Any]
    run_party: Callable[..., Any]


class FedMLDataset(list):
    """FedML's 8-item dataset list that also carries our :class:`Federation` (``.federation``)."""

    federation: Any = None


def _our_algorithm(name: Optional[str]) -> Optional[str]:
    from ..algorithms import ALGORITHMS

    if not name or str(name).lower().startswith(FEDML_PREFIX):
        return None
    return ALGORITHMS.canonical_name(name) if str(name).lower() in {n.lower() for n in ALGORITHMS.names()} else None


def _config_from_args(entry: PluginEntry, args):
    """Our validated config from the YAML FedML read (same file, same keys)."""
    path = getattr(args, "yaml_config_file", "") or ""
    if not path:
        raise ValueError("FedML's args name no YAML file (--cf); fedml_prr reads its configuration from it")
    overrides = {"federated_optimizer": str(args.federated_optimizer)}
    return entry.make_config(path, overrides=overrides)


class PluginRunner:
    """What ``FedMLRunner`` runs for one of our algorithms (``run()`` returns our result)."""

    def __init__(self, entry: PluginEntry, args, dataset) -> None:
        self.entry = entry
        self.args = args
        self.dataset = dataset

    def run(self):
        entry = self.entry
        config = _config_from_args(entry, self.args)
        federation = getattr(self.dataset, "federation", None) or entry.federation_for(config)
        training_type = getattr(self.args, "training_type", "simulation")
        backend = getattr(self.args, "backend", "sp")
        if training_type == "simulation" and backend == "sp":
            return entry.run(config, federation=federation, overwrite=True)
        if backend not in ("MPI", "GRPC"):
            raise ValueError(f"training_type {training_type} with backend {backend} is not supported by fedml_prr; "
                             "use sp, MPI or GRPC")
        comm = getattr(self.args, "comm", None) if backend == "MPI" else None
        return entry.run_party(config, rank=int(self.args.rank), backend=backend, comm=comm, federation=federation,
                               overwrite=True)


def install(entry: PluginEntry) -> None:
    """Make FedML's entry points run our registered algorithms, datasets and models (idempotent)."""
    global _installed
    if _installed:
        return
    import fedml
    import fedml.data
    import fedml.model
    from fedml import runner as fedml_runner

    from ..data import DATASETS
    from ..models import MODELS
    from .offline import init_fedml_offline

    original_init, original_load, original_create = fedml.init, fedml.data.load, fedml.model.create
    original_runner_init = fedml_runner.FedMLRunner.__init__

    @functools.wraps(original_init)
    def init(args=None, check_env=True, should_init_logs=True):
        if args is None:
            from fedml.arguments import load_arguments

            args = load_arguments(fedml._global_training_type, fedml._global_comm_backend)
        if not hasattr(args, "using_gpu"):  # fedml.device.get_device needs it; our runs use prr_device
            args.using_gpu = False
        return init_fedml_offline(args, init=original_init)

    @functools.wraps(original_load)
    def load(args):
        if str(getattr(args, "dataset", "")) not in DATASETS.names():
            return original_load(args)
        from .fedml_native import fedml_dataset

        config = _config_from_args(entry, args)
        federation = entry.federation_for(config)
        dataset = FedMLDataset(fedml_dataset(federation, config.schedule.batch_size, config.seed))
        dataset.federation = federation
        return dataset, federation.num_classes

    @functools.wraps(original_create)
    def create(args, output_dim):
        if str(getattr(args, "model", "")) not in MODELS.names():
            return original_create(args, output_dim)
        from ..training.setup import model_factory
        from .fedml_native import LogitsOnly

        return LogitsOnly(model_factory(_config_from_args(entry, args), output_dim)())

    @functools.wraps(original_runner_init)
    def runner_init(self, args, device, dataset, model, client_trainer=None, server_aggregator=None,
                    algorithm_flow=None):
        name = str(getattr(args, "federated_optimizer", ""))
        if algorithm_flow is None and _our_algorithm(name) is not None:
            algorithm_flow = PluginRunner(entry, args, dataset)
        elif name.lower().startswith(FEDML_PREFIX):
            args.federated_optimizer = name[len(FEDML_PREFIX):]
        original_runner_init(self, args, device, dataset, model, client_trainer=client_trainer,
                             server_aggregator=server_aggregator, algorithm_flow=algorithm_flow)

    def runner_run(self):
        return self.runner.run()

    fedml.init = init
    fedml.data.load = load
    fedml.model.create = create
    fedml_runner.FedMLRunner.__init__ = runner_init
    fedml_runner.FedMLRunner.run = runner_run  # FedML's run() drops the result; ours returns it
    _installed = True
    logger.info("fedml_prr installed into FedML (algorithms, datasets, models)")

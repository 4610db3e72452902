"""FedML 0.9.6's own single-process FedAvg on one of our federations: the runtime cross-check.

Our runtime (:mod:`fedml_prr.runtime.sp`) replaces FedML's sp simulator, which ignores custom
trainers.  To show that it is faithful, :func:`run_fedml_fedavg` trains FedAvg through FedML's
*own* code path - ``FedMLRunner`` -> ``SimulatorSingleProcess`` -> ``FedAvgAPI`` with FedML's
default classification trainer ``ModelTrainerCLS`` - on the same data, initial weights and
schedule, then evaluates the resulting global model per client with our
:func:`~fedml_prr.training.loops.evaluate`.  ``tests/test_fedml_crosscheck.py`` compares it with
our FedAvg; docs/fedml_integration.md lists the measured agreement and every difference between
the two trainers.

What FedML's ``ModelTrainerCLS.train`` does (read from its source, 0.9.6): a fresh
``torch.optim.SGD(params, lr=args.learning_rate)`` per ``train`` call (per client and round) -
no momentum, no weight decay (``weight_decay`` is only passed to its Adam branch), no learning
rate schedule - then ``args.epochs`` passes over the DataLoader with ``nn.CrossEntropyLoss``.
The server (``FedAvgAPI._aggregate``) averages every state-dict entry weighted by the client's
``train_data_local_num_dict`` count.  :func:`run_fedml_fedavg` refuses a config asking for what
FedML cannot do rather than silently running a different schedule.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional

import torch
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Sampler, TensorDataset

from ..config import RunConfig
from ..data import dataset_task
from ..data.augment import to_model_input
from ..data.federation import Federation, ImageSplit
from ..training.federated import client_generator
from ..training.loops import batch_indices, evaluate
from ..training.results import aggregate_clients
from ..training.setup import model_factory, resolve_device
from .offline import fedml_args, init_fedml_offline

logger = logging.getLogger(__name__)


def client_shuffle_generator(seed: int, silo: int) -> torch.Generator:
    """The generator our runtime's client ``silo`` shuffles with (``FederatedClient.generator``)."""
    return client_generator(seed, silo)


class TrainingBatchSampler(Sampler[List[int]]):
    """Index batches drawn exactly as our runtime draws them, for a FedML DataLoader.

    While autograd is enabled (training) every pass draws a fresh permutation from ``generator``
    and drops a trailing batch of a single sample, as :func:`~fedml_prr.training.loops.batch_indices`
    does (BatchNorm cannot train on one sample; FedML's own loaders would crash there).  Under
    ``torch.no_grad()`` it yields every sample in order and draws nothing: FedML 0.9.6's
    ``FedAvgAPI`` also *evaluates* on the training loaders (``_local_test_on_all_clients`` at
    round 0 and at the last round, inside ``no_grad``), and those passes must not advance the
    shuffling stream, or the training batches would drift from ours.
    """

    def __init__(self, num_samples: int, batch_size: int, generator: torch.Generator) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.generator = generator

    def __iter__(self) -> Iterator[List[int]]:
        if torch.is_grad_enabled():
            for idx in batch_indices(self.num_samples, self.batch_size, self.generator):
                yield idx.tolist()
        else:
            for start in range(0, self.num_samples, self.batch_size):
                yield list(range(start, min(start + self.batch_size, self.num_samples)))

    def __len__(self) -> int:
        """Batches of a training pass (an evaluation pass may have one more)."""
        full, rest = divmod(self.num_samples, self.batch_size)
        return full + (1 if rest > 1 or (rest == 1 and self.num_samples == 1) else 0)


def _tensor_dataset(split: ImageSplit) -> TensorDataset:
    """Float images in [-1, 1] (``to_model_input``, as our evaluation feeds them) and labels."""
    return TensorDataset(to_model_input(split.images.cpu()), split.labels.cpu())


def _loader(dataset, batch_size: int, generator: Optional[torch.Generator]) -> DataLoader:
    if generator is None:  # evaluation split: in order, every sample
        return DataLoader(dataset, batch_size=batch_size, shuffle=False)
    return DataLoader(dataset, batch_sampler=TrainingBatchSampler(len(dataset), batch_size, generator))


def fedml_dataset(federation: Federation, batch_size: int, seed: int, *, match_batch_order: bool = True) -> list:
    """``federation`` in FedML's dataset contract.

    Returns ``[train_data_num, test_data_num, train_data_global, test_data_global,
    train_data_local_num_dict, train_data_local_dict, test_data_local_dict, class_num]`` with
    local dicts keyed by silo ``0..K-1``.  Loaders yield ``(float32 [B, 3, H, W] in [-1, 1],
    int64 [B])``; the images are converted once, up front (4x the ``uint8`` memory: meant for
    the small federations of a cross-check).  FedML has no validation split: ``valid`` is left out.

    Parameters
    ----------
    match_batch_order:
        True: client ``k``'s training loader shuffles with the generator our runtime's client
        ``k`` uses (:func:`client_shuffle_generator`), so with augmentation off both runtimes
        see the same batches in the same order.  False: an independent stream per client
        (seeded from ``seed`` and ``k`` by a different rule), for measuring how far two
        differently shuffled runs drift apart.
    """
    def train_generator(silo: int) -> torch.Generator:
        if match_batch_order:
            return client_shuffle_generator(seed, silo)
        return torch.Generator().manual_seed(7_777_777 * (seed + 1) + 31 * silo + 17)

    clients = federation.clients
    train_sets = [_tensor_dataset(c.train) for c in clients]
    test_sets = [_tensor_dataset(c.test) for c in clients]
    train_local = {k: _loader(ds, batch_size, train_generator(k)) for k, ds in enumerate(train_sets)}
    test_local = {k: _loader(ds, batch_size, None) for k, ds in enumerate(test_sets)}
    train_global = _loader(ConcatDataset(train_sets), batch_size, torch.Generator().manual_seed(seed))
    test_global = _loader(ConcatDataset(test_sets), batch_size, None)
    return [sum(len(ds) for ds in train_sets), sum(len(ds) for ds in test_sets), train_global, test_global,
            {k: len(ds) for k, ds in enumerate(train_sets)}, train_local, test_local, federation.num_classes]


class LogitsOnly(nn.Module):
    """Our models return ``(logits, features)``; FedML's trainers expect the logits alone.

    ``state_dict()`` returns a snapshot (cloned tensors), not views of the live parameters.
    FedML 0.9.6 workaround: ``FedAvgAPI.train`` starts with ``w_global =
    model_trainer.get_model_params()``, i.e. ``model.state_dict()``, whose tensors alias the
    live parameters; round 0 then hands each client ``copy.deepcopy(w_global)`` *after* the
    previous client trained the shared model in place, so in FedML's round 0 client k starts
    from client k-1's trained weights (chained, not parallel, training).  From round 1 on
    ``w_global`` is the aggregated dict and the bug is gone.  With a snapshot every client of
    round 0 starts from the initial weights, as FedAvg prescribes.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[0]

    def state_dict(self, *args: Any, **kwargs: Any):
        state = super().state_dict(*args, **kwargs)
        prefix = kwargs.get("prefix", "")
        for key, value in state.items():
            if key.startswith(prefix) and isinstance(value, torch.Tensor):
                state[key] = value.detach().clone()
        return state


def unsupported_by_fedml(config: RunConfig) -> List[str]:
    """What in ``config`` FedML's sp FedAvg (``ModelTrainerCLS`` with SGD) cannot reproduce."""
    s, problems = config.schedule, []
    if dataset_task(config.dataset) == "segmentation":
        problems.append(f"segmentation (dataset {config.dataset!r}): FedML's trainer and our metrics for it are "
                        "classification only; run --algorithm FedAvg or FedProx (ours, on FedML's runtime)")
    if s.momentum != 0:
        problems.append(f"momentum {s.momentum} (FedML's SGD has none): set momentum: 0")
    if s.weight_decay != 0:
        problems.append(f"weight_decay {s.weight_decay} (FedML passes it to Adam only, not SGD): set weight_decay: 0")
    if s.lr_decay_factor != 1 and s.rounds > s.lr_decay_every:
        problems.append(f"learning-rate decay every {s.lr_decay_every} rounds (FedML's is constant): "
                        f"set prr_lr_decay_every >= comm_round ({s.rounds}) or prr_lr_decay_factor: 1")
    if config.clients_per_round is not None and config.num_clients is not None \
            and config.clients_per_round < config.num_clients:
        problems.append(f"client_num_per_round {config.clients_per_round} < client_num_in_total {config.num_clients} "
                        "(FedML's own implementations run here with every client in every round): run ours "
                        "(--algorithm FedAvg), which samples with FedML's rule, or set them equal")
    if getattr(config.options, "augment", True):
        problems.append("training augmentation (FedML's trainer trains on the loader's images as they are): "
                        "set prr_augment: false")
    return problems


def fedml_simulation_keys(config: RunConfig, num_clients: int, *, backend: str, algorithm: str,
                          frequency_of_the_test: int) -> Dict[str, Any]:
    """FedML's args for its own simulator running ``algorithm`` on ``config``'s schedule, every client
    in every round."""
    s, k = config.schedule, num_clients
    keys = dict(config.fedml)
    keys.update({
        "training_type": "simulation", "backend": backend, "federated_optimizer": algorithm,
        "random_seed": config.seed, "client_num_in_total": k, "client_num_per_round": k, "worker_num": k,
        "comm_round": s.rounds, "epochs": s.epochs, "batch_size": s.batch_size,
        "client_optimizer": "sgd", "learning_rate": s.learning_rate, "weight_decay": s.weight_decay,
        "frequency_of_the_test": frequency_of_the_test,
        # create_model_trainer picks a trainer from args.dataset: any name other than
        # stackoverflow_lr / fed_shakespeare / stackoverflow_nwp gives the classification one.
        "dataset": f"fedml_prr_{config.dataset}",
    })
    return keys


@dataclass
class FedMLRunSummary:
    """Per-client test metrics of FedML's final global model, in our runtime's summary shape.

    ``clients`` maps client name -> ``{"test": metrics}``; ``mean`` is the same client average
    as ``summary["final"]["mean"]`` of our runtime; ``model`` is the final global model.
    """

    clients: Dict[str, Dict[str, Dict[str, float]]]
    mean: Dict[str, float]
    model: nn.Module


def run_fedml_fedavg(config: RunConfig, federation: Federation, *, match_batch_order: bool = True,
                     fedml_overrides: Optional[Mapping[str, Any]] = None) -> FedMLRunSummary:
    """Train FedAvg with FedML's own single-process simulator and evaluate it per client.

    The model is built by :func:`fedml_prr.training.setup.model_factory` (the same initial weights
    as our runtime), and ``comm_round``, ``epochs``, ``batch_size`` and ``learning_rate`` come
    from ``config``.  Every client takes part in every round.

    Raises
    ------
    ValueError
        ``config`` asks for something FedML's trainer does not do (see :func:`unsupported_by_fedml`).
    """
    from fedml import FedMLRunner

    problems = unsupported_by_fedml(config)
    if problems:
        raise ValueError("FedML's FedAvg cannot run this config: " + "; ".join(problems))
    federation.validate()
    s, k = config.schedule, len(federation.clients)
    # FedAvgAPI.train reads args.frequency_of_the_test; it evaluates at round 0 whatever the
    # value (0 % f == 0) and at the last round; more often is only wasted time here.
    keys = fedml_simulation_keys(config, k, backend="sp", algorithm="FedAvg", frequency_of_the_test=s.rounds)
    keys.update(fedml_overrides or {})
    args = init_fedml_offline(fedml_args(keys))  # note: fedml.init reseeds random/numpy/torch globally

    device = resolve_device(config.options.device)
    model = model_factory(config, federation.num_classes)()
    dataset = fedml_dataset(federation, s.batch_size, config.seed, match_batch_order=match_batch_order)
    logger.info("FedML sp FedAvg: %d clients, %d rounds x %d epochs", k, s.rounds, s.epochs)
    FedMLRunner(args, device, dataset, LogitsOnly(model)).run()
    # FedAvgAPI's trainer holds our wrapper and loads the aggregated weights into it after every
    # round, so ``model`` now carries FedML's final global model.  Its get_model_params() moves
    # the model to CPU (``self.model.cpu()``): put it back on the evaluation device.
    model.to(device)

    records = []
    for client in federation.clients:
        metrics = evaluate(model, client.test.to(device), federation.num_classes, config.options.eval_batch_size)
        records.append({"client": client.name, "test": metrics})
    return FedMLRunSummary(clients={r["client"]: {"test": r["test"]} for r in records},
                           mean=aggregate_clients(records, "test"), model=model)


# --------------------------------------------------------------------------- FedML's MPI simulator
#: FedML's own algorithms launchable from our CLI under mpirun (``--algorithm FedML:<name>``)
NATIVE_MPI_ALGORITHMS = ("FedAvg", "FedProx")


def _recording_aggregator(model: "LogitsOnly", args, *, federation: Federation, device: torch.device,
                          eval_batch_size: int, on_round: Callable[[int, List[Dict[str, Any]], Dict[str, Any]], None]):
    """FedML server aggregator that evaluates FedML's global model per client after every round.

    FedML 0.9.6's MPI simulator averages on its own and then calls ``test_all``; returning True
    there skips FedML's own evaluation, which for FedProx/FedOpt crashes (``metrics["test_correct"]``
    on a tuple, FedML issue #882) and hangs the job.  Instead each client's valid and test splits
    are evaluated with our metrics, so FedML's run lands in the same results folder and tables
    as ours.
    """
    from fedml.core import ServerAggregator

    class RecordingAggregator(ServerAggregator):
        def __init__(self) -> None:
            super().__init__(model, args)
            self.round = 0

        def get_model_params(self):
            return self.model.state_dict()

        def set_model_params(self, model_parameters) -> None:
            self.model.load_state_dict(model_parameters)

        def test(self, test_data, device_, args_):
            return {}

        def test_all(self, train_data_local_dict, test_data_local_dict, device_, args_) -> bool:
            inner = self.model.model.to(device)
            records = []
            for silo, client in enumerate(federation.clients):
                metrics = {name: evaluate(inner, getattr(client, name).to(device), federation.num_classes,
                                          eval_batch_size) for name in ("valid", "test")}
                records.append({"round": self.round, "silo": silo, "client": client.name, **metrics,
                                "test_before_receive": metrics["test"], "retrogress": float("nan")})
            on_round(self.round, records, {c.name: inner.state_dict() for c in federation.clients})
            self.round += 1
            return True

    return RecordingAggregator()


def run_fedml_mpi(config: RunConfig, federation: Federation, *, algorithm: str,
                  on_round: Callable[[int, List[Dict[str, Any]], Dict[str, Any]], None]) -> None:
    """This rank's part of FedML's *own* MPI simulation of ``algorithm`` (FedAvg or FedProx).

    Rank 0 calls ``on_round(round, records, states)`` after each round with per-client metrics
    of FedML's global model.  FedProx gets FedML's ``FedProxModelTrainer``: without it FedML's
    MPI FedProx trains with no proximal term at all (FEDML_NOTES.md).
    """
    from fedml import FedMLRunner

    if algorithm not in NATIVE_MPI_ALGORITHMS:
        raise ValueError(f"FedML:{algorithm} is not available; FedML's own MPI algorithms runnable here: "
                         f"{', '.join('FedML:' + a for a in NATIVE_MPI_ALGORITHMS)}")
    problems = unsupported_by_fedml(config)
    if problems:
        raise ValueError(f"FedML's {algorithm} cannot run this config: " + "; ".join(problems))
    federation.validate()
    s, k = config.schedule, len(federation.clients)
    keys = fedml_simulation_keys(config, k, backend="MPI", algorithm=algorithm, frequency_of_the_test=1)
    if algorithm == "FedProx":
        keys["fedprox_mu"] = float(getattr(config.algorithm_params, "fedprox_mu", 0.01))
    args = init_fedml_offline(fedml_args(keys))
    device = resolve_device(config.options.device)
    model = LogitsOnly(model_factory(config, federation.num_classes)())
    dataset = fedml_dataset(federation, s.batch_size, config.seed)
    trainer = None
    if algorithm == "FedProx":
        from fedml.ml.trainer.fedprox_trainer import FedProxModelTrainer

        trainer = FedProxModelTrainer(model, args)
    aggregator = _recording_aggregator(model, args, federation=federation, device=device,
                                       eval_batch_size=config.options.eval_batch_size, on_round=on_round)
    FedMLRunner(args, device, dataset, model, client_trainer=trainer, server_aggregator=aggregator).run()

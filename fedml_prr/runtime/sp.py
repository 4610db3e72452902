"""Single-process runtime (``backend: sp``): every silo in one process, FedML's classes unchanged.

FedML's own sp simulator builds its own trainer and ignores custom ones (FedML issue #565), so
this loop drives our :class:`~fedml_prr.fedml_adapter.AlgorithmClientTrainer` and
:class:`~fedml_prr.fedml_adapter.AlgorithmServerAggregator` through FedML's own method names
(``set_model_params`` -> ``train`` -> ``get_model_params`` on each client, ``aggregate`` on the
server), exactly the calls FedML's cross-silo managers make, so the MPI and gRPC runtimes reuse
both objects as they are.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Tuple

import torch

from ..algorithms import get_algorithm
from ..config import RunConfig
from ..data.federation import Federation, ImageSplit
from ..fedml_adapter import AlgorithmClientTrainer, AlgorithmServerAggregator, fedml_args, init_fedml_offline
from ..models import build_model, model_task
from ..training.batched import EngineOptions, attach_cohort
from ..training.federated import ClientContext, round_closed_by
from ..training.tasks import task_for
from ..training.validation import UpdateValidator
from .results import ResultsStore

logger = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"prr_device is {name!r} but CUDA is not available; use 'auto' or 'cpu'")
    return device


def model_factory(config: RunConfig, num_classes: int):
    """A function returning the run's model with the same initial weights at every call."""

    def build():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            return build_model(config.model, num_classes=num_classes, **config.options.model_options)

    return build


def pooled_training_split(federation: Federation) -> ImageSplit:
    """All clients' training images in one split (the Centralized reference)."""
    return ImageSplit(torch.cat([c.train.images for c in federation.clients]),
                      torch.cat([c.train.labels for c in federation.clients]))


def context_factory(config: RunConfig, federation: Federation, spec=None) -> Callable[[int], ClientContext]:
    """``silo -> ClientContext`` of a run (data, model factory, schedule, device of that silo)."""
    spec = spec or get_algorithm(config.algorithm)
    if model_task(config.model) != federation.task:
        raise ValueError(f"model {config.model!r} is a {model_task(config.model)} model but dataset {federation.name!r} "
                         f"is {federation.task}; pick a {federation.task} model (see docs/algorithm.md)")
    device = resolve_device(config.options.device)
    build = model_factory(config, federation.num_classes)
    pooled = pooled_training_split(federation) if spec.client.NEEDS_POOLED_DATA else None

    def make_context(silo: int) -> ClientContext:
        return ClientContext(silo=silo, data=federation.clients[silo], num_classes=federation.num_classes,
                             build_model=build, schedule=config.schedule, device=device, seed=config.seed,
                             eval_batch_size=config.options.eval_batch_size, augment=config.options.augment,
                             pooled_train=pooled)

    return make_context


def update_validator(config: RunConfig, federation: Federation, spec=None) -> UpdateValidator:
    """The server-side check of every upload (against the run's model and the federation)."""
    spec = spec or get_algorithm(config.algorithm)
    reference = model_factory(config, federation.num_classes)().state_dict()
    return UpdateValidator(reference, num_clients=len(federation.clients), num_classes=federation.num_classes,
                           uniform=spec.server.UNIFORM_UPLOADS)


def build_participants(config: RunConfig, federation: Federation, *, fedml_args_obj=None):
    """The FedML client trainer and server aggregator of ``config.algorithm`` on ``federation``.

    With ``prr_engine: batched`` every silo's client is created now and attached to one batched
    engine (:func:`fedml_prr.training.batched.attach_cohort`).
    """
    spec = get_algorithm(config.algorithm)
    if config.num_clients is not None and config.num_clients != len(federation.clients):
        raise ValueError(f"client_num_in_total is {config.num_clients} but dataset {config.dataset!r} has "
                         f"{len(federation.clients)} clients ({', '.join(c.name for c in federation.clients)}); "
                         "set client_num_in_total to match or remove it")
    make_context = context_factory(config, federation, spec)
    args = fedml_args_obj if fedml_args_obj is not None else init_fedml_offline(fedml_args(config.fedml))
    placeholder = torch.nn.Identity()
    trainer = AlgorithmClientTrainer(placeholder, args, spec=spec, params=config.algorithm_params,
                                     make_context=make_context)
    server = spec.server(len(federation.clients), config.schedule, config.algorithm_params, config.seed)
    aggregator = AlgorithmServerAggregator(placeholder, args, server=server,
                                           validator=update_validator(config, federation, spec))
    if config.options.engine == "batched":
        o = config.options
        attach_cohort([trainer.client(s) for s in range(len(federation.clients))],
                      EngineOptions(bf16=o.bf16, channels_last=o.channels_last, conv_mode=o.conv_mode))
    return trainer, aggregator


def run_fields(config: RunConfig, clients: List[str], wall_time_s: float, **extra: Any) -> Dict[str, Any]:
    """What a run's ``summary.json`` says about the run itself (``extra`` adds or overrides)."""
    fields = {"algorithm": config.algorithm, "dataset": config.dataset, "model": config.model, "seed": config.seed,
              "rounds": config.schedule.rounds, "epochs": config.schedule.epochs, "clients": clients,
              "wall_time_s": wall_time_s}
    fields.update(extra)
    return fields


def local_uploads(trainer: AlgorithmClientTrainer, silos: List[int]) -> List[Tuple[int, Dict[str, Any]]]:
    """Train each of ``silos`` one protocol step in this process; FedML's ``(num_samples, upload)`` list."""
    uploads = []
    for silo in silos:
        trainer.set_id(silo)
        trainer.train(None, None, None)
        upload = trainer.get_model_params()
        uploads.append((upload["num_samples"], upload))
    return uploads


@dataclass
class RunResult:
    summary: Dict[str, Any]
    results_dir: str


def run_single_process(config: RunConfig, federation: Federation, *, resume: bool = False,
                       overwrite: bool = False, progress: bool = False) -> RunResult:
    """Train ``config.algorithm`` on ``federation`` in this process; write the results folder.

    Parameters
    ----------
    resume:
        Continue from ``resume.pt`` of ``config.options.results_dir`` (the last completed round);
        the run then ends with the same metrics as an uninterrupted one.
    overwrite:
        Replace an earlier run in the results folder (otherwise that is an error).
    progress:
        Show a tqdm progress bar over protocol steps.
    """
    threads_before = torch.get_num_threads()
    if config.options.threads:
        torch.set_num_threads(config.options.threads)  # process-wide: restored when the run ends
    try:
        return _run(config, federation, resume=resume, overwrite=overwrite, progress=progress)
    finally:
        torch.set_num_threads(threads_before)


def _run(config: RunConfig, federation: Federation, *, resume: bool, overwrite: bool, progress: bool) -> RunResult:
    federation.validate()
    trainer, aggregator = build_participants(config, federation)
    server = aggregator.server
    silos = list(range(len(federation.clients)))
    names = {s: federation.clients[s].name for s in silos}
    task = task_for(federation.clients[0].train)
    store = ResultsStore(config.options.results_dir, config.schedule.rounds, config.options.selection_fraction,
                         selection_metric=task.selection_metric)

    start_step, elapsed_before = 0, 0.0
    if resume:
        store.check_same_config(config.to_dict())
        state = store.load_resume()
        start_step, elapsed_before = state["step"], state["elapsed"]
        server.load_state_dict(state["server"])
        aggregator.step = start_step
        for silo in silos:
            trainer.client(silo).load_state_dict(state["clients"][silo])
        store.reload(completed_rounds=round_closed_by(start_step, server.spr))
        logger.info("resuming %s at step %d of %d", config.algorithm, start_step, server.num_steps)
    else:
        store.start_fresh(config.to_dict(), overwrite=overwrite)

    started = time.perf_counter()
    steps = range(start_step, server.num_steps + 1)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=server.num_steps + 1, initial=start_step, desc=f"{config.algorithm}", unit="step")
    for step in steps:
        closed = round_closed_by(step, server.spr)
        if closed is not None and step != start_step:  # a round is complete: checkpoint before delivery
            store.save_resume({"step": step, "server": server.state_dict(),
                               "clients": {s: trainer.clients[s].state_dict() for s in silos},
                               "elapsed": elapsed_before + time.perf_counter() - started})
        messages = aggregator.get_model_params()
        for silo in silos:
            trainer.set_model_params(messages[silo])
        if closed is not None:
            records = [r for silo in silos for r in trainer.clients[silo].pop_records()]
            reported = {names[s]: trainer.clients[s].reported_model().state_dict() for s in silos}
            store.add_round(closed, records, reported)
            if bar is not None:
                mean_score = sum(r["test"][task.selection_metric] for r in records) / len(records)
                bar.set_postfix({"round": closed, f"test_{task.score_name}": f"{100 * mean_score:.1f}"})
        if step == server.num_steps:
            break
        aggregator.set_model_params(aggregator.aggregate(local_uploads(trainer, silos)))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.update(1)
        bar.close()
    elapsed = elapsed_before + time.perf_counter() - started
    summary = store.summary(run_fields(config, [names[s] for s in silos], elapsed,
                                       task=task.name, selection_metric=task.selection_metric))
    return RunResult(summary=summary, results_dir=str(store.root))

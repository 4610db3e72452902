"""What every runtime builds from a validated config before training: one place for all of them.

The device, the model factory (the same initial weights on every call, in every process), the
per-silo :class:`~fedml_prr.training.federated.ClientContext`, the server's upload validator and
the checks that the config and the data agree.  The single-process runtime, the MPI and gRPC
parties and FedML's own trainers (:mod:`fedml_prr.fedml_adapter.fedml_native`) all build
through these functions, so they cannot drift apart.
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple, Type, Union

import torch

from ..config import ConfigError, RunConfig
from ..data.federation import ClientData, Federation, FederationInfo, ImageSplit
from ..models import build_model, model_task
from .federated import ClientContext, FederatedServer
from .validation import UpdateValidator


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda[:i]`` must be available (else
    :class:`~fedml_prr.config.ConfigError`, before anything is built)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"prr_device {name!r} is not a device; use 'auto', 'cpu', 'cuda' or 'cuda:<index>'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"prr_device is {name!r} but CUDA is not available on this machine; use 'auto' or 'cpu'")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"prr_device is {name!r} but this machine has {torch.cuda.device_count()} CUDA device(s) "
                          f"(cuda:0..cuda:{torch.cuda.device_count() - 1}); pick one of them or 'auto'")
    return device


def model_factory(config: RunConfig, num_classes: int) -> Callable[[], torch.nn.Module]:
    """A function returning the run's model with the same initial weights at every call."""

    def build() -> torch.nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            return build_model(config.model, num_classes=num_classes, **config.options.model_options)

    return build


def check_federation(config: RunConfig, federation: Union[Federation, FederationInfo]) -> None:
    """The config's model and client count agree with the federation (clear errors otherwise)."""
    if isinstance(federation, Federation):
        federation.validate()
        federation = federation.info
    clients = federation.clients
    if config.num_clients is not None and config.num_clients != len(clients):
        raise ValueError(f"client_num_in_total is {config.num_clients} but dataset {config.dataset!r} has "
                         f"{len(clients)} clients ({', '.join(clients)}); set client_num_in_total to match or remove it")
    if config.clients_per_round is not None and config.clients_per_round > len(clients):
        raise ValueError(f"client_num_per_round is {config.clients_per_round} but dataset {config.dataset!r} has "
                         f"{len(clients)} clients; set client_num_per_round to at most {len(clients)}")
    if model_task(config.model) != federation.task:
        raise ValueError(f"model {config.model!r} is a {model_task(config.model)} model but dataset {federation.name!r} "
                         f"is {federation.task}; pick a {federation.task} model (see docs/algorithm.md)")


def trains_on_one_image(build: Callable[[], torch.nn.Module], image_size: int) -> bool:
    """Whether a model from ``build`` can take a training step on a batch of one image (BatchNorm
    after global pooling cannot: "Expected more than 1 value per channel"); probed on a fresh copy."""
    with torch.random.fork_rng(devices=[]):  # dropout draws: the run's random stream stays untouched
        model = build().train()
        try:
            model(torch.zeros(1, 3, image_size, image_size))
        except ValueError:
            return False
    return True


def check_batches(config: RunConfig, federation: Federation, build: Callable[[], torch.nn.Module]) -> None:
    """Every client can train: a model that cannot train on one image (:func:`trains_on_one_image`,
    probed only when it matters) needs batches of 2 and 2 training images per client; the last
    batch of one image is dropped already (:func:`~fedml_prr.training.loops.batch_indices`)."""
    single = [c for c in federation.clients if len(c.train) == 1]
    if (config.schedule.batch_size > 1 and not single) or trains_on_one_image(build, federation.image_size):
        return
    if config.schedule.batch_size == 1:
        raise ConfigError(f"batch_size is 1, but model {config.model!r} cannot train on a batch of one image "
                          "(BatchNorm); set batch_size to 2 or more")
    raise ValueError(f"client {single[0].name!r} of dataset {federation.name!r} has 1 training image, but model "
                     f"{config.model!r} cannot train on a batch of one image (BatchNorm): each client's train split "
                     "needs at least 2 images; add images or drop the client")


def pooled_training_split(federation: Federation) -> ImageSplit:
    """All clients' training images in one split (the Centralized reference)."""
    return ImageSplit(torch.cat([c.train.images for c in federation.clients]),
                      torch.cat([c.train.labels for c in federation.clients]))


def context_factory(config: RunConfig, federation: Federation, *,
                    pooled_data: bool = False) -> Callable[[int], ClientContext]:
    """``silo -> ClientContext`` of a run (data, model factory, schedule, device of that silo).

    ``pooled_data``: the algorithm asks for every client's training split
    (``FederatedClient.NEEDS_POOLED_DATA``, the Centralized reference).
    """
    check_federation(config, federation)
    device = resolve_device(config.options.device)
    build = model_factory(config, federation.num_classes)
    check_batches(config, federation, build)
    pooled = pooled_training_split(federation) if pooled_data else None

    def make_context(silo: int) -> ClientContext:
        if not 0 <= silo < len(federation.clients):
            raise ValueError(f"silo {silo} is outside 0..{len(federation.clients) - 1}")
        return client_context(config, silo, federation.clients[silo], federation.num_classes, device=device,
                              build=build, pooled=pooled)

    return make_context


def client_context(config: RunConfig, silo: int, data: ClientData, num_classes: int, *,
                   device: Optional[torch.device] = None, build: Optional[Callable[[], torch.nn.Module]] = None,
                   pooled: Optional[ImageSplit] = None) -> ClientContext:
    """The context of silo ``silo`` holding ``data`` (one party of a distributed run holds only its own)."""
    return ClientContext(silo=silo, data=data, num_classes=num_classes,
                         build_model=build or model_factory(config, num_classes), schedule=config.schedule,
                         device=device or resolve_device(config.options.device), seed=config.seed,
                         eval_batch_size=config.options.eval_batch_size, augment=config.options.augment,
                         pooled_train=pooled, eval_every_epoch=config.options.eval_every_epoch)


def build_server(config: RunConfig, server_class: Type[FederatedServer], num_clients: int,
                 num_classes: int) -> Tuple[FederatedServer, UpdateValidator]:
    """The algorithm's server, knowing the run's initial model, and the check of every upload
    against that model (``FederatedServer.UNIFORM_UPLOADS``: whether every silo uploads the same
    fields)."""
    initial = {k: v.detach().cpu() for k, v in model_factory(config, num_classes)().state_dict().items()}
    server = server_class(num_clients, config.schedule, config.algorithm_params, config.seed)
    server.initial_state = initial
    validator = UpdateValidator(initial, num_clients=num_clients, num_classes=num_classes,
                                uniform=server_class.UNIFORM_UPLOADS)
    return server, validator

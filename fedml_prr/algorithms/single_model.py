"""Shared machinery of the one-model baselines: a client that trains one model and shares some of
its keys, and a server that averages what it receives.

Each baseline overrides only what differs (Flower-style): which keys stay local
(:meth:`SingleModelClient.local_keys`), the per-batch loss (:meth:`SingleModelClient.batch_loss`),
an extra regulariser (:meth:`SingleModelClient.regularizer`) or the local schedule
(:meth:`SingleModelClient.train_round`).
"""

from __future__ import annotations

from typing import Callable, Dict, List, Mapping, Optional, Set

import torch
from torch import nn

from ..core.averaging import weighted_average
from ..data.federation import ImageSplit
from ..training.codec import number, state
from ..training.federated import ClientContext, FederatedClient, FederatedServer, Message, StepInfo, cpu_state
from ..training.loops import training_batches

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def batchnorm_keys(model: nn.Module) -> Set[str]:
    """State-dict keys of every BatchNorm layer (parameters and buffers)."""
    keys = set()
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            prefix = f"{name}." if name else ""
            keys |= {prefix + k for k in module.state_dict()}
    return keys


def head_keys(model: nn.Module) -> Set[str]:
    """Keys of the final classifier (the model's ``classifier_key`` module): the personal head."""
    module_name = model.classifier_key.rsplit(".", 1)[0]
    return {k for k in model.state_dict() if k.startswith(module_name + ".")}


def train_epoch(client: FederatedClient, model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: LossFn,
                regularizer: Optional[Callable[[], Optional[torch.Tensor]]] = None,
                split: Optional[ImageSplit] = None) -> float:
    """One epoch over ``split`` (default: ``client``'s training split); returns the mean batch loss.

    ``loss_fn(logits, features, targets)``; ``regularizer()``, when it returns a tensor, is added to
    every batch's loss.
    """
    model.train()
    total = torch.zeros((), device=client.ctx.device)
    batches = 0
    split = client.train_split if split is None else split
    for x, y in training_batches(split, client.ctx.schedule.batch_size, client.generator, augment=client.ctx.augment):
        logits, features = model(x)
        loss = loss_fn(logits, features, y)
        extra = regularizer() if regularizer is not None else None
        if extra is not None:
            loss = loss + extra
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach()
        batches += 1
    return (total / max(batches, 1)).item()


class SingleModelClient(FederatedClient):
    """One model per client: local SGD for E epochs, upload of the shared keys, load on receive.

    The reported model is the client's model after it loaded the server's keys (for FedAvg the
    global model; for FedBN / FedPer / FedRep the global body with the client's own BN / head).
    """

    STEPS_PER_ROUND = 1
    UPLOAD_FIELDS = {"state": state, "loss": number}

    def __init__(self, ctx: ClientContext, params) -> None:
        super().__init__(ctx, params)
        self.model = ctx.build_model().to(ctx.device)
        self.models = {"model": self.model}
        local = self.local_keys()
        self.shared_keys: List[str] = [k for k in self.model.state_dict() if k not in local]
        self.last_loss = float("nan")

    # ----------------------------------------------------------------- hooks for baselines
    def local_keys(self) -> Set[str]:
        """Keys that never leave the client (none for FedAvg)."""
        return set()

    def batch_loss(self, logits: torch.Tensor, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy (segmentation: per-pixel CE + Dice), the task's plain loss."""
        return self.task.loss(logits, targets)

    def regularizer(self) -> Optional[torch.Tensor]:
        """Extra term added to every batch's loss (None: nothing)."""
        return None

    def train_round(self, info: StepInfo) -> None:
        """Local training of one round: E epochs of :meth:`batch_loss` with one optimizer."""
        optimizer = self.make_optimizer(self.model, info.round_idx)
        for _ in range(self.ctx.schedule.epochs):
            self.last_loss = train_epoch(self, self.model, optimizer, self.batch_loss, self.regularizer)
            if self.reports_trained_model():
                self.evaluate_epoch()

    @classmethod
    def reports_trained_model(cls) -> bool:
        """Whether the model trained here is the reported one (then ``prr_eval_every_epoch`` evaluates it
        after each epoch; Ditto, FedRoD, FedAvg-FT report another model and record no epoch evaluation)."""
        return cls.reported_model is SingleModelClient.reported_model

    # ----------------------------------------------------------------- protocol
    def apply(self, message: Message) -> None:
        if "global" in message:
            unexpected = set(message["global"]) - set(self.shared_keys)
            if unexpected:
                raise ValueError(f"silo {self.ctx.silo}: the server sent keys this client keeps local: {sorted(unexpected)[:5]}")
            self.model.load_state_dict(message["global"], strict=False)

    def local_step(self, info: StepInfo) -> None:
        self.train_round(info)

    def payload(self, info: StepInfo) -> Message:
        return {"state": cpu_state(self.model, self.shared_keys), "loss": self.last_loss}

    def reported_model(self) -> nn.Module:
        return self.model


class AveragingServer(FederatedServer):
    """Sample-weighted average of the uploaded ``state`` (whatever keys the clients share)."""

    STEPS_PER_ROUND = 1
    MESSAGE_FIELDS = {"global": state}

    def __init__(self, num_clients, schedule, params, seed) -> None:
        super().__init__(num_clients, schedule, params, seed)
        self.global_state: Optional[Dict[str, torch.Tensor]] = None

    def aggregate_step(self, info: StepInfo, uploads: Mapping[int, Message]) -> None:
        silos = sorted(uploads)
        self.global_state = weighted_average([uploads[s]["state"] for s in silos],
                                             [uploads[s]["num_samples"] for s in silos])

    def payload_for(self, silo: int, step: int) -> Message:
        return {} if self.global_state is None else {"global": self.global_state}

    def extra_state(self):
        return {"global_state": self.global_state}

    def load_extra_state(self, state):
        self.global_state = state["global_state"]

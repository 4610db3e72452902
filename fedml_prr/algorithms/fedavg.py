"""FedAvg (McMahan et al., AISTATS 2017): local SGD with cross-entropy, sample-weighted average.

Every client reports its copy of the global model, as FedAvg papers do; its retrogress is the
change from the locally trained model to the freshly received global one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..core.averaging import weighted_average
from ..data.augment import augment_batch
from ..training.federated import ClientContext, FederatedClient, FederatedServer, Message, StepInfo
from ..training.loops import batch_indices
from . import register_algorithm


@dataclass(frozen=True)
class FedAvgParams:
    """FedAvg has no hyper-parameters beyond the shared schedule."""


def train_epoch_cross_entropy(client: FederatedClient, model: nn.Module, optimizer: torch.optim.Optimizer,
                              extra_loss=None) -> float:
    """One augmented epoch of cross-entropy over ``client``'s training split; mean loss."""
    model.train()
    split, total, batches = client.train_split, 0.0, 0
    for idx in batch_indices(len(split), client.ctx.schedule.batch_size, client.generator):
        idx = idx.to(split.images.device)
        logits, _ = model(augment_batch(split.images[idx], client.generator))
        loss = F.cross_entropy(logits, split.labels[idx])
        if extra_loss is not None:
            loss = loss + extra_loss(model)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total, batches = total + loss.item(), batches + 1
    return total / max(batches, 1)


class FedAvgClient(FederatedClient):
    STEPS_PER_ROUND = 1

    def __init__(self, ctx: ClientContext, params: FedAvgParams) -> None:
        super().__init__(ctx, params)
        self.model = ctx.build_model().to(ctx.device)
        self.models = {"model": self.model}
        self.last_loss = float("nan")

    def apply(self, message: Message) -> None:
        if "global" in message:
            self.model.load_state_dict(message["global"])

    def local_step(self, info: StepInfo) -> None:
        optimizer = self.make_optimizer(self.model, info.round_idx)
        for _ in range(self.ctx.schedule.epochs):
            self.last_loss = train_epoch_cross_entropy(self, self.model, optimizer)

    def payload(self, info: StepInfo) -> Message:
        return {"state": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
                "loss": self.last_loss}

    def reported_model(self) -> nn.Module:
        return self.model


class FedAvgServer(FederatedServer):
    STEPS_PER_ROUND = 1

    def __init__(self, num_clients, schedule, params, seed) -> None:
        super().__init__(num_clients, schedule, params, seed)
        self.global_state = None

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


SPEC = register_algorithm("FedAvg", client=FedAvgClient, server=FedAvgServer, params=FedAvgParams,
                          summary="sample-weighted average of the clients' models (McMahan et al. 2017)")

"""Centralized: one model trained on the pooled training data of all clients (upper reference).

It ignores privacy on purpose: silo 0 trains on every client's training split for E epochs per
round (the same number of image-epochs as one round of a federated method) and every client
reports that model on its own valid and test splits.
"""

from __future__ import annotations

from typing import Mapping

from ..training.federated import Message, StepInfo
from .registry import register_algorithm
from .single_model import AveragingServer, SingleModelClient, cpu_state, train_epoch


class CentralizedClient(SingleModelClient):
    NEEDS_POOLED_DATA = True

    def train_round(self, info: StepInfo) -> None:
        if self.ctx.silo != 0:
            return  # only the pooled trainer trains
        optimizer = self.make_optimizer(self.model, info.round_idx)
        for _ in range(self.ctx.schedule.epochs):
            self.last_loss = train_epoch(self, self.model, optimizer, self.batch_loss, split=self.ctx.pooled_train)

    def payload(self, info: StepInfo) -> Message:
        return {"state": cpu_state(self.model), "loss": self.last_loss} if self.ctx.silo == 0 else {}


class CentralizedServer(AveragingServer):
    """Forwards the pooled trainer's model (silo 0) to every client."""

    UNIFORM_UPLOADS = False

    def aggregate_step(self, info: StepInfo, uploads: Mapping[int, Message]) -> None:
        if 0 in uploads:  # the pooled trainer took part; otherwise the model stays as it was
            self.global_state = uploads[0]["state"]


SPEC = register_algorithm("Centralized", client=CentralizedClient, server=CentralizedServer)

"""One-model baselines on the batched engine (``prr_engine: batched``).

Any :class:`~fedml_prr.algorithms.single_model.SingleModelClient` that keeps the default local
schedule (:meth:`train_round`: E epochs of :meth:`batch_loss`, one optimizer per round) and adds
no regularizer trains here exactly as in its own loop: FedAvg, FedBN, FedPer, FedLC, Local.  Each
client's own ``batch_loss`` is called on its slot's logits, so a baseline that only changes the
loss needs nothing more.  FedProx, FedRep, Ditto and Centralized change the schedule or add a
regularizer over the module's parameters; they keep the loop engine.
"""

from __future__ import annotations

from typing import List

import torch

from ..training.batched import Cohort, register_cohort
from ..training.federated import StepInfo
from .single_model import SingleModelClient


@register_cohort
class SingleModelCohort(Cohort):
    """One slot per client: its ``model``."""

    @classmethod
    def supports(cls, client) -> bool:
        kind = type(client)
        return (isinstance(client, SingleModelClient) and not client.NEEDS_POOLED_DATA
                and kind.train_round is SingleModelClient.train_round
                and kind.regularizer is SingleModelClient.regularizer)

    def slot_models(self, client: SingleModelClient) -> List[torch.nn.Module]:
        return [client.model]

    def run_step(self, info: StepInfo) -> None:
        members, device = self.members, self.device
        momentum_state: dict = {}  # one optimizer per round, as train_round
        self.load_slots()
        for _ in range(members[0].ctx.schedule.epochs):
            loss_sums = torch.zeros(len(members), device=device)
            batches = [0] * len(members)

            def member_loss(m: int, logits: torch.Tensor, features: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
                loss = members[m].batch_loss(logits[0], features[0], y)
                loss_sums[m] += loss.detach()
                batches[m] += 1
                return loss

            self.train_epoch(member_loss, info.round_idx, momentum_state)
            means = loss_sums.cpu() / torch.tensor([max(n, 1) for n in batches])  # read once per epoch
            for client, mean in zip(members, means.tolist()):
                client.last_loss = mean
            if any(c.ctx.eval_every_epoch and c.reports_trained_model() for c in members):
                self.store_slots()  # the epoch's weights into each client's model, evaluated there
                for client in members:
                    if client.reports_trained_model():
                        client.evaluate_epoch()
        self.store_slots()

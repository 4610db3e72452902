"""Ditto (Li et al., ICML 2021): a global model trained as in FedAvg, and a personal model
trained with ``CE + lambda/2 ||v - w_global||^2``; the personal model is reported and never sent."""

from __future__ import annotations

import torch

from ..config.algorithms import DittoParams
from ..training.federated import ClientContext, StepInfo
from .registry import register_algorithm
from .single_model import AveragingServer, SingleModelClient, train_epoch


class DittoClient(SingleModelClient):
    REPORTED_MODEL_REPLACED_ON_RECEIVE = False  # the personal model never receives server weights

    def __init__(self, ctx: ClientContext, params: DittoParams) -> None:
        super().__init__(ctx, params)  # self.model: the client's copy of the global model
        self.personal = ctx.build_model().to(ctx.device)
        self.models["personal"] = self.personal

    def train_round(self, info: StepInfo) -> None:
        anchor = [p.detach().clone() for p in self.model.parameters()]  # w_global of this round
        lam = self.params.ditto_lambda

        def pull():
            return 0.5 * lam * sum(((v - w) ** 2).sum() for v, w in zip(self.personal.parameters(), anchor))

        personal_opt = self.make_optimizer(self.personal, info.round_idx)
        for _ in range(self.ctx.schedule.epochs):
            train_epoch(self, self.personal, personal_opt, self.batch_loss, pull)
        super().train_round(info)  # then the global model's local update, as FedAvg

    def reported_model(self) -> torch.nn.Module:
        return self.personal


SPEC = register_algorithm("Ditto", client=DittoClient, server=AveragingServer)

"""PRR's local epoch on the batched engine (``prr_engine: batched``).

The same epoch as :meth:`PRRClient.local_step <fedml_prr.algorithms.prr.PRRClient.local_step>`
for all clients of the process at once, through the same public pieces: each client's
:meth:`~fedml_prr.algorithms.prr.PRRClient.begin_epoch`, its
:class:`~fedml_prr.algorithms.prr.PRREpoch` (per-batch losses and accumulation) and
:meth:`~fedml_prr.algorithms.prr.PRRClient.end_epoch`.  The personalized model and the deputy of
every client are the slots of one stacked model (see :mod:`fedml_prr.training.batched`); only the
forward passes and the SGD step differ from the loop.
"""

from __future__ import annotations

from typing import Dict, List

import torch

from ..training.batched import Cohort, MemberLoss, register_cohort
from ..training.federated import StepInfo
from .prr import PRRClient, PRREpoch


@register_cohort
class PRRCohort(Cohort):
    """Slots: ``(personalized, deputy)`` per client, or the one model of ``use_det: false``."""

    @classmethod
    def supports(cls, client) -> bool:
        return isinstance(client, PRRClient)

    def slot_models(self, client: PRRClient) -> List[torch.nn.Module]:
        return [client.personal] if client.single_model else [client.personal, client.deputy]

    def __init__(self, clients, options) -> None:
        super().__init__(clients, options)
        self.momentum_state: Dict[str, Dict[int, torch.Tensor]] = {}

    def run_step(self, info: StepInfo) -> None:
        if info.first_of_round:
            self.momentum_state = {}  # the loop re-creates its optimizers each round
        epochs = self.begin_epochs(info)
        self.load_slots()
        self.train_epoch(self.epoch_loss(epochs), info.round_idx, self.momentum_state)
        self.store_slots()
        for client, epoch in zip(self.members, epochs):
            client.end_epoch(epoch)

    def begin_epochs(self, info: StepInfo) -> List[PRREpoch]:
        """Every member's :meth:`~fedml_prr.algorithms.prr.PRRClient.begin_epoch`, the faithful stage
        check's eval passes run for all of them at once (its F1 scores are read on the host)."""
        checked = [m for m, c in enumerate(self.members) if c.needs_train_predictions(info)]
        predictions = self.predict_train(checked)
        epochs: List[PRREpoch] = []
        for m, client in enumerate(self.members):
            given = None
            if m in predictions:
                preds, labels = predictions[m]
                given = (labels, preds[0], preds[1])
            epochs.append(client.begin_epoch(info, given))
        return epochs

    def epoch_loss(self, epochs: List[PRREpoch]) -> MemberLoss:
        """The members' per-batch loss for :meth:`train_epoch`: P's and D's losses under each
        client's stage, recorded into its epoch."""

        def member_loss(m: int, logits: torch.Tensor, features: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            z_p, f_p = logits[0], features[0]
            z_d = z_p if self.members[m].single_model else logits[1]
            loss_p, loss_d, loss = epochs[m].losses(z_p, z_d, y)
            epochs[m].record(z_p, f_p, z_d, y, loss_p, loss_d)
            return loss

        return member_loss

"""PRR's local epoch on the batched engine (``prr_engine: batched``).

The same epoch as :meth:`PRRClient.local_step <fedml_prr.algorithms.prr.PRRClient.local_step>`
for all clients of the process at once: each client's stage (DET), CPA loss, prototypes and
predictions are its own; the personalized model and the deputy of every client are the slots of
one stacked model (see :mod:`fedml_prr.training.batched`).  The client objects keep the state
between epochs (models, prototypes, stage, logs), so the protocol, resume and evaluation are
those of the loop.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import torch

from ..core.det import stage_losses
from ..core.prototypes import PrototypeAccumulator
from ..training.batched import Cohort, register_cohort
from ..training.federated import StepInfo
from .prr import PRRClient


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
        members = self.members
        if info.first_of_round:
            self.momentum_state = {}  # the loop re-creates its optimizers each round
        checked = [m for m, c in enumerate(members) if c.needs_train_predictions(info)]
        predictions = self.predict_train(checked)
        f1 = []
        for m, client in enumerate(members):
            given = None
            if m in predictions:
                preds, labels = predictions[m]
                given = (labels, preds[0], preds[1])
            f1.append(client._begin_epoch(info, given))
        gammas = [c._prototype_gamma(info.round_idx) for c in members]
        self.load_slots()
        self._train_epoch(info, gammas)
        self.store_slots()
        for client, (f1_personal, f1_deputy) in zip(members, f1):
            client._end_epoch(f1_personal, f1_deputy)

    def _train_epoch(self, info: StepInfo, gammas: List[Optional[torch.Tensor]]) -> None:
        members, device = self.members, self.device
        seesaws = [c._seesaw() for c in members]
        accumulators = [PrototypeAccumulator(c.ctx.num_classes, c.feature_dim, device) for c in members]
        trackers = [{name: c.task.score_tracker(c.ctx.num_classes) for name in ("personal", "deputy")} for c in members]
        loss_sums = torch.zeros(len(members), 2, device=device)
        batches = self.epoch_batches()
        for active, groups in self.train_steps(batches):
            total = torch.zeros((), device=device)
            for group, inputs, labels in groups:
                outputs = self.forward(inputs, group, training=True)
                for m, y, (logits, features) in zip(group, labels, outputs):
                    client = members[m]
                    z_p, f_p = logits[0], features[0]
                    task, seesaw, gamma = client.task, seesaws[m], gammas[m]
                    if client.single_model:
                        z_d = z_p
                        loss_p = loss_d = task.loss(z_p, y, seesaw=seesaw, gamma=gamma)
                        total = total + loss_p
                    else:
                        z_d = logits[1]
                        p = client.params
                        loss_p, loss_d = stage_losses(
                            client.stage, z_p, z_d, task.loss(z_p, y, seesaw=seesaw, gamma=gamma),
                            task.loss(z_d, y, seesaw=seesaw, gamma=gamma), temperature=p.distill_temperature,
                            weight=p.distill_weight, distillation=task.distillation)
                        total = total + loss_p + loss_d
                    task.add_prototypes(accumulators[m], f_p, y)
                    loss_sums[m] += torch.stack([loss_p.detach(), loss_d.detach()])
                    trackers[m]["personal"].add(z_p, y)
                    trackers[m]["deputy"].add(z_d, y)
            self.sgd_step(total, active, info.round_idx, self.momentum_state)
        for m, client in enumerate(members):
            client._store_epoch(accumulators[m], trackers[m],
                                loss_sums[m] / max(len(batches[m]), 1))

"""FedRep (Collins et al., ICML 2021): personal head trained first with the body frozen, then the
shared body with the head frozen; only the body is averaged."""

from __future__ import annotations

from ..training.federated import StepInfo
from .registry import register_algorithm
from .single_model import AveragingServer, SingleModelClient, head_keys, train_epoch


class FedRepClient(SingleModelClient):
    def local_keys(self):
        return head_keys(self.model)

    def train_round(self, info: StepInfo) -> None:
        head = head_keys(self.model)
        names = [n for n, _ in self.model.named_parameters()]
        for part, epochs in ((head, self.params.fedrep_head_epochs),
                             ({n for n in names if n not in head}, self.ctx.schedule.epochs)):
            for name, p in self.model.named_parameters():
                p.requires_grad_(name in part)
            optimizer = self.make_optimizer([p for n, p in self.model.named_parameters() if n in part],
                                            info.round_idx)
            for _ in range(epochs):
                self.last_loss = train_epoch(self, self.model, optimizer, self.batch_loss)
        for p in self.model.parameters():
            p.requires_grad_(True)


SPEC = register_algorithm("FedRep", client=FedRepClient, server=AveragingServer)

"""FedRep (Collins et al., ICML 2021): personal head trained first with the body frozen, then the
shared body with the head frozen; only the body is averaged."""

from __future__ import annotations

from dataclasses import dataclass

from ..training.federated import StepInfo
from .registry import register_algorithm
from .single_model import AveragingServer, SingleModelClient, head_keys, train_epoch


@dataclass(frozen=True)
class FedRepParams:
    """``prr_fedrep_head_epochs``: head-only epochs per round before the ``epochs`` body epochs
    (the FedRep paper and code: 10 head epochs, 1 body epoch)."""

    fedrep_head_epochs: int = 10

    def __post_init__(self) -> None:
        if self.fedrep_head_epochs < 0:
            raise ValueError(f"prr_fedrep_head_epochs must be >= 0, got {self.fedrep_head_epochs}")


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


SPEC = register_algorithm("FedRep", client=FedRepClient, server=AveragingServer, params=FedRepParams,
                          summary="personal head then shared body, body averaged (Collins et al. 2021)")

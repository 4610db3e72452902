"""FedAvg-FT: FedAvg whose global model every client fine-tunes locally before evaluating it, the
personalisation baseline of FLamby (J. Ogier du Terrail et al., "FLamby: Datasets and Benchmarks
for Cross-Silo Federated Learning in Realistic Healthcare Settings", NeurIPS 2022 Datasets and
Benchmarks; ``flamby/strategies/fed_avg_fine_tuning.py``, after Wang et al., arXiv 1909.12488).

Training is FedAvg's, untouched: the client trains its copy of the global model and uploads it;
the server averages.  Whenever the client receives the server's model (and, at the first training
step, the initial model every client starts from), it copies that model into a separate
*fine-tuned* model and trains the copy for ``fedavg_ft_epochs`` epochs of the task's plain loss on
its training split (SGD of the schedule at the learning rate of the round that produced the model,
augmentation as in training).  The fine-tuned copy is the reported model; it is never sent and the
uploaded global copy never sees it.  Fine-tuning shuffles and augments from its own generator,
seeded by (run seed, silo, step), so the uploads are bit-identical to FedAvg's, and the result of a
fine-tuning does not depend on anything but the model it starts from.

FLamby fine-tunes once, after the last round, for a number of SGD steps (its personalisation
benchmark: 100).  Here the fine-tuned copy is rebuilt every round, so that the per-round metrics,
model selection and retrogress are those of the deployed personalised model; the budget is stated
in epochs (default 1: at the PRR paper's client sizes, 1400-2700 training images in batches of 16,
100 steps are 0.6-1.1 epochs).  ``fedavg_ft_epochs: 0`` reports the global copy: exactly FedAvg.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..training.federated import ClientContext, Message
from ..training.loops import training_batches
from . import register_algorithm
from .single_model import AveragingServer, SingleModelClient


@dataclass(frozen=True)
class FedAvgFTParams:
    """``prr_fedavg_ft_epochs``: local fine-tuning epochs of the received global model before each
    evaluation (default 1, the whole-epoch budget nearest FLamby's 100 SGD steps; see the module
    docstring)."""

    fedavg_ft_epochs: int = 1

    def __post_init__(self) -> None:
        if self.fedavg_ft_epochs < 0:
            raise ValueError(f"prr_fedavg_ft_epochs must be >= 0, got {self.fedavg_ft_epochs}")


def fine_tune_seed(seed: int, silo: int, step: int) -> int:
    """Seed of the fine-tuning generator of ``silo`` after the message of ``step`` (distinct from
    the client's training generator, seeded ``1_000_003 * (seed + 1) + silo``)."""
    return ((seed + 1) * 1_000_003 + silo) * 7_919 + step


class FedAvgFTClient(SingleModelClient):
    """FedAvg's client plus a fine-tuned copy of the global model, which is reported."""

    def __init__(self, ctx: ClientContext, params: FedAvgFTParams) -> None:
        super().__init__(ctx, params)
        self.finetuned = ctx.build_model().to(ctx.device)
        self.models["finetuned"] = self.finetuned

    def apply(self, message: Message) -> None:
        super().apply(message)
        if message["step"] >= 1:  # the model the client (re)starts from: the initial one at step 1
            self.fine_tune(message["step"])

    def fine_tune(self, step: int) -> None:
        """Reset the fine-tuned copy to the client's model and train it ``fedavg_ft_epochs`` epochs."""
        self.finetuned.load_state_dict(self.model.state_dict())
        generator = torch.Generator().manual_seed(fine_tune_seed(self.ctx.seed, self.ctx.silo, step))
        optimizer = self.make_optimizer(self.finetuned, max(step - 2, 0))  # the round that produced the model
        self.finetuned.train()
        for _ in range(self.params.fedavg_ft_epochs):
            for x, y in training_batches(self.train_split, self.ctx.schedule.batch_size, generator,
                                         augment=self.ctx.augment):
                logits, features = self.finetuned(x)
                loss = self.batch_loss(logits, features, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

    def reported_model(self) -> nn.Module:
        return self.finetuned


SPEC = register_algorithm("FedAvg-FT", client=FedAvgFTClient, server=AveragingServer, params=FedAvgFTParams,
                          summary="FedAvg's global model fine-tuned locally before evaluation (FLamby)")

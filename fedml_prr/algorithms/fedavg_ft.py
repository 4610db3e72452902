"""FedAvg-FT: FedAvg whose global model every client fine-tunes locally before evaluating it, the
personalisation baseline of FLamby (J. Ogier du Terrail et al., "FLamby: Datasets and Benchmarks
for Cross-Silo Federated Learning in Realistic Healthcare Settings", NeurIPS 2022 Datasets and
Benchmarks; ``flamby/strategies/fed_avg_fine_tuning.py``, after Wang et al., arXiv 1909.12488).

Training is FedAvg's, untouched: the client trains its copy of the global model and uploads it;
the server averages.  Before each evaluation of a round - after local training, and after
receiving the server's model - the client copies the model it holds into a separate
*fine-tuned* model and trains the copy for ``fedavg_ft_epochs`` epochs of the task's plain loss on
its training split (SGD of the schedule at the round's learning rate, augmentation as in training).
The fine-tuned copy is the reported model (so retrogress compares the fine-tuned local model with
the fine-tuned new global one); it is never sent and the uploaded copy never sees it.
Fine-tuning shuffles and augments from its own generator, seeded by (run seed, silo, step, which
of the two evaluations), so the uploads are bit-identical to FedAvg's and a fine-tuned copy does
not depend on how often or when anything else ran; it is computed once per model (cached until the
client's model changes).

FLamby fine-tunes once, after the last round, for a number of SGD steps (its personalisation
benchmark: 100).  Here the copy is fine-tuned at every evaluation, so that the per-round metrics,
model selection and retrogress are those of the personalised model; the budget is stated in
epochs (default 1: at the PRR paper's client sizes, 1144-2708 training images in batches of 16,
100 steps are 0.6-1.4 epochs).  ``fedavg_ft_epochs: 0`` reports the client's own model: exactly
FedAvg, metrics included.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from ..config.algorithms import FedAvgFTParams
from ..training.federated import ClientContext, Message
from ..training.loops import training_batches
from .registry import register_algorithm
from .single_model import AveragingServer, SingleModelClient


def fine_tune_seed(seed: int, silo: int, step: int, after_receive: bool) -> int:
    """Seed of the fine-tuning generator of ``silo``'s model after training step ``step`` or after
    the message of ``step`` (distinct from the training generator, ``1_000_003 * (seed + 1) + silo``)."""
    return ((seed + 1) * 1_000_003 + silo) * 7_919 + 2 * step + int(after_receive)


class FedAvgFTClient(SingleModelClient):
    """FedAvg's client plus a fine-tuned copy of its model, which is reported."""

    def __init__(self, ctx: ClientContext, params: FedAvgFTParams) -> None:
        super().__init__(ctx, params)
        self.finetuned = ctx.build_model().to(ctx.device)
        self.models["finetuned"] = self.finetuned
        #: what the client's model is: (step, True) after the message of ``step``, (step, False)
        #: after training ``step``; the fine-tuned copy is current when its version matches
        self.model_version: Tuple[int, bool] = (0, True)
        self.finetuned_version: Optional[Tuple[int, bool]] = None

    def train(self, step: int) -> None:
        self.model_version = (step, False)
        super().train(step)  # its end-of-round evaluation fine-tunes the trained model

    def apply(self, message: Message) -> None:
        super().apply(message)
        if "global" in message:
            self.model_version = (message["step"], True)

    def reported_model(self) -> nn.Module:
        if self.finetuned_version != self.model_version:
            self.fine_tune(*self.model_version)
            self.finetuned_version = self.model_version
        return self.finetuned

    def fine_tune(self, step: int, after_receive: bool) -> None:
        """Reset the fine-tuned copy to the client's model and train it ``fedavg_ft_epochs`` epochs at
        the learning rate of the round that produced the model."""
        self.finetuned.load_state_dict(self.model.state_dict())
        generator = torch.Generator().manual_seed(fine_tune_seed(self.ctx.seed, self.ctx.silo, step, after_receive))
        optimizer = self.make_optimizer(self.finetuned, max(step - 2 if after_receive else step - 1, 0))
        self.finetuned.train()
        for _ in range(self.params.fedavg_ft_epochs):
            for x, y in training_batches(self.train_split, self.ctx.schedule.batch_size, generator,
                                         augment=self.ctx.augment):
                logits, features = self.finetuned(x)
                loss = self.batch_loss(logits, features, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

    def extra_state(self):
        return {"model_version": list(self.model_version),
                "finetuned_version": None if self.finetuned_version is None else list(self.finetuned_version)}

    def load_extra_state(self, state):
        self.model_version = tuple(state["model_version"])
        version = state["finetuned_version"]
        self.finetuned_version = None if version is None else tuple(version)


SPEC = register_algorithm("FedAvg-FT", client=FedAvgFTClient, server=AveragingServer)

"""FedRoD (H.-Y. Chen and W.-L. Chao, "On Bridging Generic and Personalized Federated Learning for
Image Classification", ICLR 2022), the variant with a linear personalized head.

Each client holds the shared model - body and *generic head* ``h_g`` (the model's final classifier,
``classifier_key``) - and a *personalized head* ``h_p`` of the same shape, initialised as a copy of
the initial generic head and never sent.  With ``r`` the classifier's input (the body's
representation: the penultimate feature; for segmentation the per-pixel map the 1x1 classifier
reads), every training batch minimises, in one forward pass and one SGD step,

- generic:  ``L_g = CE(h_g(r) + log n, y)``, the balanced softmax (Ren et al., NeurIPS 2020) on the
  client's training class counts ``n`` (a class the client lacks has prior 0: ``log 0 = -inf``
  removes it from the client's softmax, as the reference code);
- personal: ``L_p = CE(h_g(r).detach() + h_p(r.detach()), y)``: only ``h_p`` learns from it.

The server averages body and generic head (sample-weighted, as FedAvg).  The reported model
predicts ``h_g(r) + h_p(r)`` (:class:`GenericPlusPersonal`).  The reference code (PFLlib's
``clientrod.py``) interleaves the two updates per batch with separate SGD optimizers at the same
learning rate; since the two losses touch disjoint parameters, one optimizer over both is the
same update.

Segmentation runs per pixel: ``n`` are the client's pixel counts, both losses are the task's
plain loss (CE + soft Dice) on the adjusted logits, and a personal logit map smaller than the
logits (DeepLab's stride-16 classifier) is upsampled bilinearly (``align_corners=False``), as the
registered segmentation models upsample their own logits.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Dict, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..config.algorithms import FedRoDParams
from ..training.federated import ClientContext, StepInfo
from .registry import register_algorithm
from .single_model import AveragingServer, SingleModelClient, train_epoch


def classifier_module(model: nn.Module) -> nn.Module:
    """The module holding ``model.classifier_key`` (``fc2`` / ``classifier``)."""
    return model.get_submodule(model.classifier_key.rsplit(".", 1)[0])


@contextlib.contextmanager
def classifier_input(model: nn.Module) -> Iterator[Dict[str, torch.Tensor]]:
    """While active, ``store["input"]`` is the input of ``model``'s classifier in the latest forward."""
    store: Dict[str, torch.Tensor] = {}
    handle = classifier_module(model).register_forward_hook(lambda module, inputs, output: store.update(input=inputs[0]))
    try:
        yield store
    finally:
        handle.remove()


def personal_logits(head: nn.Module, representation: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``head(representation)``, upsampled bilinearly to ``like``'s spatial size when smaller."""
    logits = head(representation)
    if logits.dim() == 4 and logits.shape[2:] != like.shape[2:]:
        logits = F.interpolate(logits, size=like.shape[2:], mode="bilinear", align_corners=False)
    return logits


def log_prior(class_counts: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``log n_c`` broadcast along the class axis of ``logits`` (``-inf`` where ``n_c = 0``)."""
    prior = class_counts.to(device=logits.device, dtype=logits.dtype).log()
    return prior.view(-1, *([1] * (logits.dim() - 2)))


class GenericPlusPersonal(nn.Module):
    """A FedRoD client's prediction: ``(h_g(r) + h_p(r), features)``.

    Holds the client's model and personal head by reference (its state dict: ``model.*`` and
    ``head.*``), so it always predicts with their current weights.
    """

    def __init__(self, model: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.head = head

    def forward(self, x: torch.Tensor):
        with classifier_input(self.model) as store:
            logits, features = self.model(x)
        return logits + personal_logits(self.head, store["input"], logits), features


class FedRoDClient(SingleModelClient):
    """Shares the whole model (body + generic head); the personal head stays on the client."""

    def __init__(self, ctx: ClientContext, params: FedRoDParams) -> None:
        super().__init__(ctx, params)
        self.personal_head = copy.deepcopy(classifier_module(self.model))
        self.models["personal_head"] = self.personal_head
        self.prediction = GenericPlusPersonal(self.model, self.personal_head)

    def fedrod_loss(self, logits: torch.Tensor, representation: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``L_g + L_p`` of one batch (see the module docstring)."""
        generic = self.task.loss(logits + log_prior(self.class_counts, logits), targets)
        personal = self.task.loss(logits.detach() + personal_logits(self.personal_head, representation.detach(), logits),
                                  targets)
        return generic + personal

    def train_round(self, info: StepInfo) -> None:
        parameters = [*self.model.parameters(), *self.personal_head.parameters()]
        optimizer = self.make_optimizer(parameters, info.round_idx)
        with classifier_input(self.model) as store:
            def loss(logits, features, targets):
                return self.fedrod_loss(logits, store["input"], targets)

            for _ in range(self.ctx.schedule.epochs):
                self.last_loss = train_epoch(self, self.model, optimizer, loss)

    def reported_model(self) -> nn.Module:
        return self.prediction


SPEC = register_algorithm("FedRoD", client=FedRoDClient, server=AveragingServer)

"""FedALA (J. Zhang, Y. Hua, H. Wang, T. Song, Z. Xue, R. Ma, H. Guan, "FedALA: Adaptive Local
Aggregation for Personalized Federated Learning", AAAI 2023).

The server averages the clients' models (sample-weighted, as FedAvg).  A client receiving the
global model ``G`` does not overwrite its own model ``L`` (the one it trained last round): its
*adaptive local aggregation* (ALA, the paper's eq. 4-5) initialises

- the lower layers, and every buffer (BatchNorm running statistics, which ALA learns no weight
  for and the server averages), from ``G``;
- the top ``p`` layers as ``L + (G - L) * W``, with element-wise weights ``W`` in [0, 1]
  (initialised to ones, kept from round to round) learned on a random ``s`` % of the client's
  training images: per batch, with ``T = L + (G - L) * W`` loaded in a temporary copy,
  ``W <- clip(W - eta * dLoss/dT * (G - L), 0, 1)`` (the chain rule of ``dLoss/dW``).

The first time a global model arrives (the paper's "initial stage", its second iteration), ``W``
is trained until the task loss of the last batch of each epoch has a population standard
deviation below ``threshold`` over the last ``num_pre_loss`` epochs (with more than
``num_pre_loss`` epochs done) - the reference code's convergence rule - or ``max_start_epochs``
epochs (a bound the reference code does not have); afterwards one epoch per round.  Then the
client trains as FedAvg and reports its own model.

Layers (``p``) are counted as the paper does - modules that own parameters, from the last
registered one (the classifier) backwards; the reference code counts parameter tensors instead
(its ``-p 2`` on its CNN is the weight and bias of the last layer, the paper's ``p = 1``).  The
ALA images are a random subset drawn from the client's generator, in batches of the schedule's
batch size without augmentation (the reference code takes a contiguous slice at a random offset
and drops the last incomplete batch; here only a last batch of one image is dropped, as in
training).  The temporary copy runs in training mode (batch statistics), as in the reference.
"""

from __future__ import annotations

import copy
import logging
import statistics
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Tuple

import torch
from torch import nn

from ..config.algorithms import FedALAParams
from ..data.augment import to_model_input
from ..training.federated import ClientContext, Message
from ..training.loops import batch_indices
from .registry import register_algorithm
from .single_model import AveragingServer, SingleModelClient

logger = logging.getLogger(__name__)

Batches = Callable[[], Iterable[Tuple[torch.Tensor, torch.Tensor]]]


def top_layer_keys(model: nn.Module, layers: int) -> List[str]:
    """Parameter names of the last ``layers`` modules (registration order) that own parameters."""
    owners = [(name, module) for name, module in model.named_modules() if list(module.parameters(recurse=False))]
    if layers > len(owners):
        raise ValueError(f"prr_ala_layers is {layers} but the model has {len(owners)} layers with parameters")
    keys = []
    for name, module in owners[-layers:]:
        keys += [f"{name}.{p}" if name else p for p, _ in module.named_parameters(recurse=False)]
    return keys


@dataclass(frozen=True)
class ALAResult:
    """Output of :func:`adaptive_local_aggregation`."""

    state: Dict[str, torch.Tensor]  # the initialised local model (every state key)
    weights: Dict[str, torch.Tensor]  # the learned W, one tensor per top-layer parameter
    epochs: int
    losses: Tuple[float, ...]  # loss of the last batch of each epoch


def adaptive_local_aggregation(
    local: nn.Module,
    global_state: Mapping[str, torch.Tensor],
    weights: Optional[Mapping[str, torch.Tensor]],
    batches: Batches,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    top_keys: List[str],
    eta: float,
    until_converged: bool,
    threshold: float = 0.1,
    num_pre_loss: int = 10,
    max_epochs: int = 100,
) -> ALAResult:
    """FedALA's local initialisation of ``local`` from the received ``global_state``.

    Parameters
    ----------
    local:
        The client's model (its weights ``L``); not modified.
    global_state:
        The server's model ``G`` (every state key, on ``local``'s device).
    weights:
        ``W`` of the top parameters from the previous call; ``None`` = all ones (first call).
    batches:
        ``batches()`` yields one epoch of ``(inputs, targets)``, the same batches at every call.
    loss_fn:
        ``loss_fn(logits, targets)``: the client's task loss.
    top_keys:
        Parameter names aggregated element-wise (:func:`top_layer_keys`); every other entry of
        the result is ``G``'s.
    until_converged:
        Train ``W`` until the convergence rule holds (first call) instead of one epoch.

    Returns
    -------
    ALAResult
        The new state ``G`` with ``L + (G - L) * W`` on ``top_keys``, and the new ``W``.
    """
    own = local.state_dict()
    local_state = {k: own[k].detach() for k in top_keys}
    update = {k: global_state[k].detach() - local_state[k] for k in top_keys}  # G - L
    w = {k: (torch.ones_like(local_state[k]) if weights is None else weights[k].detach().clone()) for k in top_keys}
    temp = copy.deepcopy(local)
    temp.load_state_dict(global_state)
    params = dict(temp.named_parameters())
    for name, p in params.items():
        p.requires_grad_(name in update)
    with torch.no_grad():
        for k in top_keys:
            params[k].copy_(local_state[k] + update[k] * w[k])
    temp.train()
    losses: List[float] = []
    while True:
        loss = None
        for inputs, targets in batches():
            logits, _ = temp(inputs)
            loss = loss_fn(logits, targets)
            grads = torch.autograd.grad(loss, [params[k] for k in top_keys])
            with torch.no_grad():
                for k, grad in zip(top_keys, grads):
                    w[k] = torch.clamp(w[k] - eta * grad * update[k], 0.0, 1.0)
                    params[k].copy_(local_state[k] + update[k] * w[k])
        if loss is None:
            raise ValueError("ALA needs at least one batch of two or more images; raise prr_ala_rand_percent")
        losses.append(loss.item())
        if not until_converged:
            break
        if len(losses) > num_pre_loss and statistics.pstdev(losses[-num_pre_loss:]) < threshold:
            break
        if len(losses) >= max_epochs:
            logger.warning("ALA weights did not converge in %d epochs (std of the last %d losses %.3g >= %.3g)",
                           max_epochs, num_pre_loss, statistics.pstdev(losses[-num_pre_loss:]), threshold)
            break
    state = {k: v.detach().clone() for k, v in global_state.items()}
    state.update({k: params[k].detach().clone() for k in top_keys})
    return ALAResult(state, w, len(losses), tuple(losses))


class FedALAClient(SingleModelClient):
    """FedAvg's local training after ALA's local initialisation; reports its own model."""

    def __init__(self, ctx: ClientContext, params: FedALAParams) -> None:
        super().__init__(ctx, params)
        self.top_keys = top_layer_keys(self.model, params.ala_layers)
        self.ala_weights: Optional[Dict[str, torch.Tensor]] = None
        self.ala_epochs = 0

    def ala_batches(self) -> Batches:
        """A fresh random ``s`` % of the training images, as plain model inputs in fixed batches."""
        n = len(self.train_split)
        chosen = torch.randperm(n, generator=self.generator)[:max(1, int(self.params.ala_rand_percent / 100 * n))]
        order = [chosen[idx] for idx in batch_indices(len(chosen), self.ctx.schedule.batch_size, self.generator,
                                                      shuffle=False)]
        split = self.train_split

        def batches():
            for idx in order:
                idx = idx.to(split.images.device)
                yield to_model_input(split.images[idx]), split.labels[idx].long()  # masks may be uint8

        return batches

    def apply(self, message: Message) -> None:
        if "global" not in message:
            return
        unexpected = set(message["global"]) - set(self.shared_keys)
        if unexpected:
            raise ValueError(f"silo {self.ctx.silo}: unexpected keys from the server: {sorted(unexpected)[:5]}")
        device = self.ctx.device
        result = adaptive_local_aggregation(
            self.model, {k: v.to(device) for k, v in message["global"].items()}, self.ala_weights, self.ala_batches(),
            self.task.loss, top_keys=self.top_keys, eta=self.params.ala_eta,
            until_converged=self.ala_weights is None, threshold=self.params.ala_threshold,
            num_pre_loss=self.params.ala_num_pre_loss, max_epochs=self.params.ala_max_start_epochs)
        self.model.load_state_dict(result.state)
        self.ala_weights, self.ala_epochs = result.weights, result.epochs

    def round_info(self) -> Dict[str, int]:
        return {"ala_epochs": self.ala_epochs}

    def extra_state(self):
        weights = None if self.ala_weights is None else {k: v.detach().cpu().clone() for k, v in self.ala_weights.items()}
        return {"ala_weights": weights, "ala_epochs": self.ala_epochs}

    def load_extra_state(self, state):
        weights = state["ala_weights"]
        self.ala_weights = None if weights is None else {k: v.to(self.ctx.device) for k, v in weights.items()}
        self.ala_epochs = state["ala_epochs"]


SPEC = register_algorithm("FedALA", client=FedALAClient, server=AveragingServer)

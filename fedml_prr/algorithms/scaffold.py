"""SCAFFOLD (S. P. Karimireddy, S. Kale, M. Mohri, S. Reddi, S. Stich, A. T. Suresh, "SCAFFOLD:
Stochastic Controlled Averaging for Federated Learning", ICML 2020), option II.

State: the server's model ``x`` and control variate ``c``; each client's control variate ``c_i``
(all zero at the start).  In round ``t`` client ``i`` starts from ``x`` and takes ``K`` SGD steps
(E epochs of its batches) at the round's learning rate ``lr_t``, every one corrected:

    y <- y - lr_t * (g_i(y) + c - c_i)            (every trained parameter, BatchNorm's included)

then updates its control variate with option II and uploads the two differences

    c_i+ = c_i - c + (x - y_i) / (K * lr_t),      dy_i = y_i - x,   dc_i = c_i+ - c_i.

Over the silos ``S`` that took part in the round the server applies

    x <- x + eta_g * sum_{i in S} w_i dy_i,      c <- c + sum_{i in S} v_i dc_i,

with ``w_i`` the weights of ``S`` (summing to 1) and ``v_i`` those of all ``N`` silos (summing to 1
over all of them: the paper's ``|S| / N`` factor of partial participation).  The paper weights
clients uniformly (``w_i = 1/|S|``, ``v_i = 1/N``); here the weights default to training-set shares
(``n_i / n_S`` and ``n_i / n``) - the objective this project's FedAvg optimises, so that SCAFFOLD
with zero control variates (its first round) is exactly FedAvg's update;
``prr_scaffold_sample_weighted: false`` gives the paper's uniform weights.  With every silo taking
part and equal client sizes all coincide.

BatchNorm buffers are not trained by gradients: clients upload them and the server averages them
with the same weights, as FedAvg does (``num_batches_tracked``: the maximum).  Weight decay and
momentum of the schedule act as in plain SGD (weight decay is part of ``g_i``).

The server holds ``x`` (starting from the run's initial model, ``FederatedServer.initial_state``)
and sends it, with ``c``, at every round start, so a silo that missed rounds starts from the current
``x`` like everyone else; its ``c_i`` stays as it was.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional

import torch
from torch import nn

from ..config.algorithms import ScaffoldParams
from ..core.averaging import weighted_average
from ..training.codec import number, state
from ..training.federated import ClientContext, FederatedServer, Message, StepInfo
from ..training.loops import batch_indices
from .registry import register_algorithm
from .single_model import SingleModelClient

State = Dict[str, torch.Tensor]


def option_ii_control(client_control: Mapping[str, torch.Tensor], server_control: Mapping[str, torch.Tensor],
                      start: Mapping[str, torch.Tensor], end: Mapping[str, torch.Tensor], *, steps: int,
                      learning_rate: float) -> State:
    """SCAFFOLD's option II: ``c_i+ = c_i - c + (x - y_i) / (K * lr)`` for every key of ``start``."""
    if steps < 1 or learning_rate <= 0:
        raise ValueError(f"option II needs K >= 1 local steps and a positive learning rate, got {steps}, {learning_rate}")
    return {k: client_control[k] - server_control[k] + (start[k] - end[k]) / (steps * learning_rate) for k in start}


def optimizer_steps_per_epoch(num_samples: int, batch_size: int) -> int:
    """SGD steps of one epoch (:func:`~fedml_prr.training.loops.batch_indices`'s batches)."""
    return sum(1 for _ in batch_indices(num_samples, batch_size, torch.Generator(), shuffle=False))


class ScaffoldClient(SingleModelClient):
    """Corrected local SGD, option II control variate; reports its copy of the server's model."""

    UPLOAD_FIELDS = {"delta": state, "control_delta": state, "buffers": state, "loss": number}

    def __init__(self, ctx: ClientContext, params: ScaffoldParams) -> None:
        super().__init__(ctx, params)
        self.parameter_keys = [name for name, _ in self.model.named_parameters()]
        self.buffer_keys = [k for k in self.model.state_dict() if k not in set(self.parameter_keys)]
        zeros = {k: torch.zeros_like(p) for k, p in self.model.named_parameters()}
        self.control: State = {k: v.clone() for k, v in zeros.items()}  # c_i, never sent
        self.server_control: State = zeros  # c, as last received
        self.round_start: Optional[State] = None  # x of the current round
        self.control_delta: Optional[State] = None

    def apply(self, message: Message) -> None:
        if "global" in message:
            self.model.load_state_dict(message["global"])  # x, buffers included
        if "control" in message:
            self.server_control = {k: v.to(self.ctx.device) for k, v in message["control"].items()}

    def train_round(self, info: StepInfo) -> None:
        self.round_start = {k: p.detach().clone() for k, p in self.model.named_parameters()}
        correction = {k: self.server_control[k] - self.control[k] for k in self.parameter_keys}  # c - c_i
        handles = [p.register_hook(lambda grad, d=correction[k]: grad + d) for k, p in self.model.named_parameters()]
        try:
            super().train_round(info)
        finally:
            for handle in handles:
                handle.remove()
        steps = self.ctx.schedule.epochs * optimizer_steps_per_epoch(len(self.train_split), self.ctx.schedule.batch_size)
        end = {k: p.detach() for k, p in self.model.named_parameters()}
        updated = option_ii_control(self.control, self.server_control, self.round_start, end, steps=steps,
                                    learning_rate=self.ctx.schedule.learning_rate_at(info.round_idx))
        self.control_delta = {k: updated[k] - self.control[k] for k in self.parameter_keys}
        self.control = updated

    def payload(self, info: StepInfo) -> Message:
        state = self.model.state_dict()
        message: Message = {
            "delta": {k: (state[k] - self.round_start[k]).detach().cpu() for k in self.parameter_keys},
            "control_delta": {k: v.detach().cpu().clone() for k, v in self.control_delta.items()},
            "loss": self.last_loss,
        }
        if self.buffer_keys:
            message["buffers"] = {k: state[k].detach().cpu().clone() for k in self.buffer_keys}
        return message

    def extra_state(self):
        def cpu(state):
            return None if state is None else {k: v.detach().cpu().clone() for k, v in state.items()}

        return {"control": cpu(self.control), "server_control": cpu(self.server_control),
                "round_start": cpu(self.round_start), "control_delta": cpu(self.control_delta)}

    def load_extra_state(self, state):
        def here(values):
            return None if values is None else {k: v.to(self.ctx.device) for k, v in values.items()}

        self.control, self.server_control = here(state["control"]), here(state["server_control"])
        self.round_start, self.control_delta = here(state["round_start"]), here(state["control_delta"])

    def reported_model(self) -> nn.Module:
        return self.model


class ScaffoldServer(FederatedServer):
    """``x`` and ``c`` from the clients' differences (see the module docstring)."""

    STEPS_PER_ROUND = 1
    MESSAGE_FIELDS = {"global": state, "control": state}

    def __init__(self, num_clients, schedule, params: ScaffoldParams, seed) -> None:
        super().__init__(num_clients, schedule, params, seed)
        self.global_state: Optional[State] = None  # x, buffers included
        self.control: Optional[State] = None  # c

    def _weight(self, silo: int, upload: Mapping) -> float:
        return float(upload["num_samples"] if self.params.scaffold_sample_weighted else 1)

    def aggregate_step(self, info: StepInfo, uploads: Mapping[int, Message]) -> None:
        silos = sorted(uploads)
        if self.global_state is None:
            if self.initial_state is None:
                raise RuntimeError("SCAFFOLD's server needs the run's initial model (FederatedServer.initial_state)")
            self.global_state = {k: v.detach().cpu().clone() for k, v in self.initial_state.items()}
        weights = [self._weight(s, uploads[s]) for s in silos]
        mean_delta = weighted_average([uploads[s]["delta"] for s in silos], weights)
        x = dict(self.global_state)
        for key, delta in mean_delta.items():
            x[key] = x[key] + self.params.scaffold_global_lr * delta.to(x[key].dtype)
        if "buffers" in uploads[silos[0]]:
            x.update(weighted_average([uploads[s]["buffers"] for s in silos], weights))
        self.global_state = x
        # c moves by sum_{i in S} v_i dc_i, v normalised over all N silos: the present silos' share of them
        every = [float(self.sample_counts.get(s, 1)) if self.params.scaffold_sample_weighted else 1.0
                 for s in range(self.num_clients)]
        share = sum(every[s] for s in silos) / sum(every)
        mean_control = weighted_average([uploads[s]["control_delta"] for s in silos], weights)
        control_step = mean_control if share == 1.0 else {k: v * share for k, v in mean_control.items()}
        self.control = control_step if self.control is None else {k: self.control[k] + v for k, v in control_step.items()}

    def payload_for(self, silo: int, step: int) -> Message:
        if self.global_state is None:
            return {}
        return {"global": self.global_state, "control": self.control}

    def extra_state(self):
        return {"global_state": self.global_state, "control": self.control}

    def load_extra_state(self, state):
        self.global_state, self.control = state["global_state"], state["control"]


SPEC = register_algorithm("SCAFFOLD", client=ScaffoldClient, server=ScaffoldServer)

"""Batched training engine: every client of a single-process run trained as one computation.

The per-client loop trains silo after silo, one model and one batch of 16 at a time.  The
batched engine (``prr_engine: batched``) holds the models of all K clients as one
:class:`~fedml_prr.models.stacked.StackedVGG16Slim` (PRR: 2K slots, personalized model and
deputy of each client) and runs each optimisation step of all clients at once:

- each client still draws its own shuffled batches and augmentations from its own generator,
  in the same order as the loop (:func:`~fedml_prr.data.augment.draw_augmentation`), and the
  augmentations of all clients' batches are applied in one call on the device;
- each slot keeps its own BatchNorm statistics, its own loss and its own SGD update
  (:func:`masked_sgd_step_`: SGD is element-wise, so one update over stacked parameters equals
  one optimizer per model); a client whose epoch is over (fewer batches) is left out of the step
  and is not touched, and a client's smaller last batch runs as its own group of the same step;
- evaluation passes (PRR's stage check) run without autograd, for all slots together.

Results equal the loop's up to float summation order (``tests/test_batched.py`` states the
tolerance).  Options: bf16 autocast (off by default), channels-last activations, grouped or
per-slot convolutions (see :class:`~fedml_prr.config.EngineOptions`).

A :class:`Cohort` owns the engine for a set of clients.  The single-process runtime attaches
one with :func:`attach_cohort`; each client's ``train`` then asks the cohort, which runs the
step of *every* member on the first call of that step and nothing on the others.  That needs
every member to have received the step's message first, as the single-process runtime does;
MPI and cross-silo keep one client per process and the loop engine.
"""

from __future__ import annotations

import abc
import contextlib
import functools
from typing import Callable, ContextManager, Dict, Iterator, List, Optional, Sequence, Tuple, Type

import torch

from ..config import EngineOptions
from ..devices import to_device
from ..data.augment import AugmentDraws, apply_augmentation, draw_augmentation, to_model_input
from ..models.stacked import StackedVGG16Slim
from .federated import FederatedClient, StepInfo
from .loops import batch_indices

#: ``(member, logits, features, labels) -> loss`` of one member's batch (see :meth:`Cohort.train_epoch`)
MemberLoss = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def autocast(options: EngineOptions, device: torch.device):
    """bf16 autocast on ``device`` when ``options.bf16``, else a no-op context."""
    if not options.bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


@torch.no_grad()
def masked_sgd_step_(params: Sequence[torch.nn.Parameter], active: Sequence[int], *, lr: float,
                     weight_decay: float = 0.0, momentum: float = 0.0,
                     state: Optional[Dict[str, Dict[int, torch.Tensor]]] = None) -> None:
    """``torch.optim.SGD`` (no dampening, no Nesterov) on the ``active`` slots of stacked parameters.

    Parameters
    ----------
    params:
        Stacked parameters ``[G, ...]`` with ``.grad`` set (None: skipped).
    active:
        Slot indices to update; every other slot keeps its parameters and momentum buffer
        bit for bit (a client whose epoch is over does not move, not even by weight decay).
    state:
        Momentum buffers (``state["buffer"][id(p)]``, ``state["started"][id(p)]``), created on
        the first call; pass a fresh dict when the loop would re-create its optimizers.
    """
    params = [p for p in params if p.grad is not None]
    if not params:
        return
    num_slots = params[0].shape[0]
    everyone = len(active) == num_slots
    index, mask = _active_slots(tuple(active), num_slots, params[0].device)
    grads = [p.grad for p in params]
    if weight_decay:
        grads = torch._foreach_add(grads, params, alpha=weight_decay)
    if momentum:
        if state is None:
            raise ValueError("momentum needs a state dict for its buffers")
        buffers, started = state.setdefault("buffer", {}), state.setdefault("started", {})
        new_grads = []
        for p, d in zip(params, grads):
            shape = (-1,) + (1,) * (p.dim() - 1)
            buf = buffers.get(id(p), torch.zeros_like(p))
            seen = started.get(id(p), torch.zeros_like(mask))
            updated = torch.where(seen.view(shape), buf * momentum + d, d)
            buffers[id(p)] = torch.where(mask.view(shape), updated, buf)
            started[id(p)] = seen | mask
            new_grads.append(buffers[id(p)])
        grads = new_grads
    if everyone:
        torch._foreach_add_(params, grads, alpha=-lr)
        return
    for p, d in zip(params, grads):
        p.index_copy_(0, index, p.index_select(0, index).add_(d.index_select(0, index), alpha=-lr))


@functools.lru_cache(maxsize=256)
def _active_slots(active: Tuple[int, ...], num_slots: int, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(index [A], mask [num_slots])`` of the ``active`` slots on ``device``, made once per distinct
    set (a training step sends nothing to the device for them); never modified by callers."""
    mask = torch.zeros(num_slots, dtype=torch.bool)
    mask[list(active)] = True
    return to_device(torch.tensor(active, dtype=torch.long), device), to_device(mask, device)


def group_by_size(batches: Sequence[Tuple[int, torch.Tensor]]) -> List[List[Tuple[int, torch.Tensor]]]:
    """``(member, indices)`` pairs grouped by batch size, largest first (one forward per group)."""
    groups: Dict[int, List[Tuple[int, torch.Tensor]]] = {}
    for member, idx in batches:
        groups.setdefault(len(idx), []).append((member, idx))
    return [groups[size] for size in sorted(groups, reverse=True)]


class Cohort(abc.ABC):
    """The batched engine of a set of clients of one algorithm (one process).

    Subclasses implement :meth:`supports`, :meth:`slot_models` and :meth:`run_step`.  Members
    are ordered by training-set size (largest first), so the clients still training at any
    step of an epoch are a prefix of the slots and the stacked weights are used without copies.
    """

    def __init__(self, clients: Sequence[FederatedClient], options: EngineOptions) -> None:
        if not clients:
            raise ValueError("a cohort needs at least one client")
        self.options = options
        self.members: List[FederatedClient] = sorted(clients, key=lambda c: -len(c.train_split))
        self.device = self.members[0].ctx.device
        self.grouped = options.grouped(self.device.type)
        self.slots: List[List[int]] = []  # member position -> its slot indices
        models = []
        for client in self.members:
            own = self.slot_models(client)
            self.slots.append(list(range(len(models), len(models) + len(own))))
            models += own
        self.stacked = StackedVGG16Slim(models[0], len(models)).to(self.device)
        if options.compile:
            self.stacked.compile_forward(options.compile_mode)
        self._done_step: Optional[int] = None
        #: entered around every epoch's optimisation steps (:meth:`train_epoch`); the device
        #: checks put CUDA's sync debug mode or the profiler there
        self.step_context: Callable[[], ContextManager] = contextlib.nullcontext
        for client in self.members:
            client.cohort = self

    # ----------------------------------------------------------------- hooks
    @classmethod
    @abc.abstractmethod
    def supports(cls, client: FederatedClient) -> bool:
        """Whether this cohort trains ``client`` exactly as the client's own loop would."""

    @abc.abstractmethod
    def slot_models(self, client: FederatedClient) -> List[torch.nn.Module]:
        """The client's models that the engine trains, in slot order."""

    @abc.abstractmethod
    def run_step(self, info: StepInfo) -> None:
        """The local step ``info`` of every member."""

    # ----------------------------------------------------------------- protocol
    def local_step(self, client: FederatedClient, info: StepInfo) -> None:
        """Called from each member's ``train``: the first call of a step trains every member."""
        if client not in self.members:
            raise ValueError(f"silo {client.ctx.silo} is not a member of this cohort")
        if self._done_step == info.step:
            return
        late = [c.ctx.silo for c in self.members if c.received_step != info.step]
        if late:
            raise RuntimeError(f"the batched engine trains all silos at once, but silo(s) {late} have not received "
                               f"the message of step {info.step}; use prr_engine: loop with this runtime")
        self.run_step(info)
        self._done_step = info.step

    # ----------------------------------------------------------------- helpers for subclasses
    def load_slots(self) -> None:
        for client, slots in zip(self.members, self.slots):
            for slot, model in zip(slots, self.slot_models(client)):
                self.stacked.load_slot(slot, model)

    def store_slots(self) -> None:
        for client, slots in zip(self.members, self.slots):
            for slot, model in zip(slots, self.slot_models(client)):
                self.stacked.store_slot(slot, model)

    def epoch_batches(self) -> List[List[torch.Tensor]]:
        """Each member's index batches of one epoch (shuffled from its own generator, as the loop),
        on the device: one non-blocking copy per member and epoch."""
        s = self.members[0].ctx.schedule
        out: List[List[torch.Tensor]] = []
        for c in self.members:
            batches = list(batch_indices(len(c.train_split), s.batch_size, c.generator))
            if not batches:
                out.append([])
                continue
            out.append(list(to_device(torch.cat(batches), self.device).split([len(b) for b in batches])))
        return out

    def step_inputs(self, batches: Sequence[Tuple[int, torch.Tensor]]) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """Model inputs and labels of each ``(member, indices)`` batch: all augmented in one call."""
        splits = [self.members[m].train_split for m, _ in batches]
        images = torch.cat([split.images[idx] for split, (_, idx) in zip(splits, batches)])
        if self.members[0].ctx.augment:
            draws = [draw_augmentation(len(idx), images.shape[1:], self.members[m].generator) for m, idx in batches]
            x = apply_augmentation(images, AugmentDraws.concat(draws))
        else:
            x = to_model_input(images)
        xs = x.split([len(idx) for _, idx in batches])
        return [(xi, split.labels[idx]) for xi, split, (_, idx) in zip(xs, splits, batches)]

    def forward(self, inputs: Sequence[torch.Tensor], members: Sequence[int], *, training: bool):
        """Per member, ``(logits [n_slots, B, C], features [n_slots, B, D])``; ``inputs[i]`` goes to
        every slot of ``members[i]`` (all the same batch size)."""
        slots = [slot for m in members for slot in self.slots[m]]
        stacked_inputs = torch.stack([x for x, m in zip(inputs, members) for _ in self.slots[m]])
        with autocast(self.options, self.device):
            logits, features = self.stacked(stacked_inputs, slots, training=training,
                                            channels_last=self.options.channels_last, grouped=self.grouped)
        logits, features = logits.float(), features.float()
        out, start = [], 0
        for m in members:
            n = len(self.slots[m])
            out.append((logits[start:start + n], features[start:start + n]))
            start += n
        return out

    def train_steps(self, batches: Sequence[Sequence[torch.Tensor]]) -> Iterator[Tuple[List[int], List]]:
        """Yield, for each optimisation step of an epoch, the active members and, per size group,
        ``(members, inputs, labels)``; the caller computes the losses and calls :meth:`sgd_step`."""
        for step in range(max(len(b) for b in batches)):
            active = [(m, b[step]) for m, b in enumerate(batches) if step < len(b)]
            data = dict(zip([m for m, _ in active], self.step_inputs(active)))
            groups = [[m for m, _ in group] for group in group_by_size(active)]
            yield [m for m, _ in active], [(g, [data[m][0] for m in g], [data[m][1] for m in g]) for g in groups]

    def train_epoch(self, member_loss: MemberLoss, round_idx: int,
                    momentum_state: Dict[str, Dict[int, torch.Tensor]]) -> None:
        """One epoch of optimisation steps of every member, on the slots as loaded: the hot loop.

        ``member_loss(member, logits [n_slots, B, C], features [n_slots, B, D], labels [B])`` is
        the member's loss of one batch (it may record what the epoch accumulates, on the
        device).  Nothing here waits for the device: batches and augmentation draws reach it
        with non-blocking copies, slot indices are cached there, and no value is read back
        (``tests/device_checks.py`` runs this under CUDA's sync debug mode and, on the CPU, on
        the data-less ``meta`` device).
        """
        with self.step_context():
            for active, groups in self.train_steps(self.epoch_batches()):
                total = torch.zeros((), device=self.device)
                for group, inputs, labels in groups:
                    for m, y, (logits, features) in zip(group, labels, self.forward(inputs, group, training=True)):
                        total = total + member_loss(m, logits, features, y)
                self.sgd_step(total, active, round_idx, momentum_state)

    def sgd_step(self, loss: torch.Tensor, members: Sequence[int], round_idx: int,
                 momentum_state: Dict[str, Dict[int, torch.Tensor]]) -> None:
        """Backward of the summed loss of ``members`` and one SGD update of their slots."""
        params = list(self.stacked.parameters())
        for p in params:
            p.grad = None
        loss.backward()
        s = self.members[0].ctx.schedule
        masked_sgd_step_(params, [slot for m in members for slot in self.slots[m]],
                         lr=s.learning_rate_at(round_idx), weight_decay=s.weight_decay,
                         momentum=s.momentum, state=momentum_state)

    @torch.no_grad()
    def predict_train(self, members: Sequence[int]) -> Dict[int, Tuple[torch.Tensor, torch.Tensor]]:
        """Eval-mode predicted labels of every slot of ``members`` on their training splits, no
        autograd: member -> (predictions ``[n_slots, N]``, labels ``[N]``)."""
        if not members:
            return {}
        chunk = self.members[0].ctx.eval_batch_size
        preds: Dict[int, List[torch.Tensor]] = {m: [] for m in members}
        longest = max(len(self.members[m].train_split) for m in members)
        for start in range(0, longest, chunk):
            batches = [(m, torch.arange(start, min(start + chunk, len(self.members[m].train_split)), device=self.device))
                       for m in members if start < len(self.members[m].train_split)]
            for group in group_by_size(batches):
                inputs = [to_model_input(self.members[m].train_split.images[idx]) for m, idx in group]
                outputs = self.forward(inputs, [m for m, _ in group], training=False)
                for (m, _), (logits, _) in zip(group, outputs):
                    preds[m].append(logits.argmax(-1))
        return {m: (torch.cat(p, dim=1), self.members[m].train_split.labels) for m, p in preds.items()}


COHORTS: List[Type[Cohort]] = []


def register_cohort(cls: Type[Cohort]) -> Type[Cohort]:
    """Class decorator: make a cohort available to :func:`attach_cohort`."""
    COHORTS.append(cls)
    return cls


def attach_cohort(clients: Sequence[FederatedClient], options: EngineOptions) -> Cohort:
    """Put ``clients`` (one process, every silo) under one batched engine.

    Raises ``ValueError`` naming the algorithms the engine supports when a registered cohort
    does not train these clients exactly as their loop.
    """
    for cls in COHORTS:
        if all(cls.supports(c) for c in clients):
            return cls(clients, options)
    names = sorted({type(c).__name__ for c in clients})
    raise ValueError(f"prr_engine: batched does not support {', '.join(names)}; it runs PRR (and its ablations) "
                     "and one-model baselines without a custom train_round or regularizer (FedAvg, FedBN, FedPer, "
                     "FedLC, Local, FedALA, FedAvg-FT) with model vgg16_slim; use prr_engine: loop")


__all__ = ["COHORTS", "Cohort", "MemberLoss", "attach_cohort", "autocast", "group_by_size", "masked_sgd_step_", "register_cohort"]

"""The message protocol every algorithm speaks, and the per-client bookkeeping it shares.

A run is a sequence of *steps* (FedML communication rounds).  At each step the server sends
every silo a message (a plain dict), each client trains and uploads a dict, and the server
aggregates.  Step 0 is a handshake: clients report their class counts, the server sums them into
the global counts (CPA needs them).  Steps ``1 .. T*S`` train, ``S`` steps per algorithm round
(PRR: ``S = E``, one local epoch per step; FedAvg-like: ``S = 1``).  A final message after the
last step lets clients evaluate the model they end with.  Messages always carry ``silo`` and
``step``, so the same objects run unchanged in one process, under MPI or over gRPC.

Evaluation and retrogress
-------------------------
At the end of each algorithm round a client evaluates its *reported* model (the one whose
metrics the paper reports: PRR's personalized model, FedAvg's copy of the global model) on its
valid and test splits, once just before it receives the server's next message and once just
after.  ``retrogress`` = test macro-F1 (segmentation: Dice) after - before (negative: the
server's model made the client worse).  The round's record carries the *after* metrics, which are those of the model
the client holds going into the next round.  With ``prr_eval_every_epoch`` the record also carries the
test metrics of :meth:`FederatedClient.epoch_models` after every local epoch (``test_every_epoch``, one
entry per epoch) and right after the receive (``test_after_receive``): the retrogress figure's points.

An absent client (not sampled, or dropped out) keeps its state and receives nothing.  Told it is
not in the next round (``in_next_round: false``), it records its round once trained, marked
``"received": false`` (retrogress NaN).  The final delivery reaches every client; one that did
not train the last round is evaluated then, marked ``"took_part": false`` (docs/configuration.md).
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Union

import torch
from torch import nn

from ..config import TrainSchedule
from ..data.federation import ClientData, ImageSplit
from .steps import StepInfo, round_closed_by, step_info, steps_per_round, total_steps  # noqa: F401 (re-exported)
from .tasks import task_for

Message = Dict[str, Any]


@dataclass(frozen=True)
class ClientContext:
    """What a client needs besides its algorithm's hyper-parameters."""

    silo: int
    data: ClientData
    num_classes: int
    build_model: Callable[[], nn.Module]  # deterministic: every call returns the same initial weights
    schedule: TrainSchedule
    device: torch.device
    seed: int
    eval_batch_size: int = 256
    augment: bool = True
    #: every client's training split concatenated; only for algorithms that ask for it
    #: (``NEEDS_POOLED_DATA``: the Centralized reference), None otherwise
    pooled_train: Optional[ImageSplit] = None
    #: ``prr_eval_every_epoch``: test metrics after every local epoch and after each receive
    eval_every_epoch: bool = False


def client_generator(seed: int, silo: int) -> torch.Generator:
    """The generator of silo ``silo``'s shuffling and augmentation in a run seeded ``seed``."""
    return torch.Generator().manual_seed(1_000_003 * (seed + 1) + silo)


def cpu_state(model: nn.Module, keys: Optional[Iterable[str]] = None) -> Dict[str, torch.Tensor]:
    """Detached CPU copies of ``model``'s state (all keys, or ``keys``): what a client uploads."""
    state = model.state_dict()
    return {k: state[k].detach().cpu().clone() for k in (keys if keys is not None else state)}


class FederatedClient(abc.ABC):
    """Per-silo client state and the shared half of the protocol.

    Subclasses set ``STEPS_PER_ROUND`` (``-1`` = one step per local epoch) and implement
    :meth:`local_step`, :meth:`payload`, :meth:`apply` and :meth:`reported_model`; they list
    every ``nn.Module`` they own in ``self.models`` so resume can save them.
    """

    STEPS_PER_ROUND: int = 1
    #: the algorithm's upload fields and their types (``training.codec`` checks), beyond the
    #: protocol's own (``codec.PROTOCOL_UPLOAD``): what a server accepts from the wire
    UPLOAD_FIELDS: Mapping[str, Callable[[Any], Optional[str]]] = {}
    #: True when the algorithm needs ``ClientContext.pooled_train`` (Centralized only)
    NEEDS_POOLED_DATA: bool = False
    #: False when receiving a message never replaces the reported model (PRR's P_k): the
    #: after-receive evaluation is then skipped and equals the before one.
    REPORTED_MODEL_REPLACED_ON_RECEIVE: bool = True

    def __init__(self, ctx: ClientContext, params: Any) -> None:
        self.ctx = ctx
        self.params = params
        self.spr = steps_per_round(self.STEPS_PER_ROUND, ctx.schedule)
        self.generator = client_generator(ctx.seed, ctx.silo)
        self.train_split = ctx.data.train.to(ctx.device)
        self.valid_split = ctx.data.valid.to(ctx.device)
        self.test_split = ctx.data.test.to(ctx.device)
        self.task = task_for(ctx.data.train)  # classification or segmentation, from the labels' shape
        self.class_counts = ctx.data.train.class_counts(ctx.num_classes)  # segmentation: pixel counts
        self.global_class_counts: Optional[torch.Tensor] = None
        self.models: Dict[str, nn.Module] = {}
        self._before: Dict[int, Dict[str, Dict[str, float]]] = {}
        self._records: List[Dict[str, Any]] = []
        self._epoch_evals: List[Dict[str, Dict[str, float]]] = []  # this round's, see evaluate_epoch
        self._last_recorded = -1  # the last round this silo evaluated
        self._last_step = -1
        self.received_step = -1  # step of the last server message
        self._in_next_round = True  # what the server's last message said (client sampling)
        #: set by the batched engine (:mod:`fedml_prr.training.batched`), which then trains this
        #: client together with the other silos of the process; None: this client's own loop
        self.cohort = None
        self.resident = True  # False while it sits out rounds (:meth:`set_resident`)

    # ----------------------------------------------------------------- protocol
    def receive(self, message: Message) -> None:
        """Take the server's message of ``message['step']``."""
        self._check_message(message)
        self.received_step = message["step"]
        self._in_next_round = bool(message.get("in_next_round", True))
        closed = round_closed_by(message["step"], self.spr)
        took_part = not (message.get("final") and closed is not None and closed not in self._before
                         and self._last_recorded < closed)  # else absent from the last round: evaluated now
        if not took_part:
            self._before[closed] = self._evaluate_reported(("valid", "test"))
        if "global_class_counts" in message:
            self.global_class_counts = torch.as_tensor(message["global_class_counts"])
        self.apply(message)
        if closed is not None and closed in self._before:
            self._record_round(closed, took_part=took_part)
        for stale in [r for r in self._before if closed is None or r < closed]:
            del self._before[stale]  # a round this silo did not finish (it missed its last step)
        if (message["step"] - 1) % self.spr == 0:  # a round starts (the batched engine may train before train())
            self._epoch_evals = []

    def train(self, step: int) -> None:
        """Run training step ``step`` (nothing at the handshake)."""
        self._last_step = step
        if step == 0:
            return
        info = step_info(step, self.spr, self.ctx.schedule)
        if self.cohort is not None:
            self.cohort.local_step(self, info)
        else:
            self.local_step(info)
        if info.last_of_round:
            self._before[info.round_idx] = self._evaluate_reported(("valid", "test"))
            self.round_trained(info)
            if not self._in_next_round and not info.last_of_run:  # no message comes before it is next sampled
                self._record_round(info.round_idx, received=False)

    def round_trained(self, info: StepInfo) -> None:
        """Hook: round ``info.round_idx``'s local training has ended and its before-receive evaluation
        is in ``_before``; called before the round can be recorded (an algorithm adds to its record here)."""

    def upload(self) -> Message:
        """What goes to the server after :meth:`train` (always ``silo``, ``step``, ``num_samples``)."""
        message: Message = {"silo": self.ctx.silo, "step": self._last_step, "num_samples": len(self.train_split)}
        if self._last_step == 0:
            message["class_counts"] = self.class_counts.clone()
        else:
            message.update(self.payload(step_info(self._last_step, self.spr, self.ctx.schedule)))
        return message

    def pop_records(self) -> List[Dict[str, Any]]:
        """Per-round metric records completed since the last call."""
        records, self._records = self._records, []
        return records

    def set_resident(self, resident: bool) -> None:
        """Models and data on the training device (``resident``) or, while the client sits out
        rounds, on the CPU without its round state (:meth:`release_round_state`)."""
        if resident == self.resident:
            return
        device = self.ctx.device if resident else torch.device("cpu")
        for model in self.models.values():
            model.to(device)
        self.train_split, self.valid_split, self.test_split = (
            split.to(device) for split in (self.train_split, self.valid_split, self.test_split))
        if not resident:
            self.release_round_state()
        self.resident = resident

    def release_round_state(self) -> None:
        """Drop what lives only within a round (optimizers); overridden by algorithms that keep it."""

    # ----------------------------------------------------------------- algorithm hooks
    @abc.abstractmethod
    def local_step(self, info: StepInfo) -> None:
        """Local training of one step."""

    @abc.abstractmethod
    def payload(self, info: StepInfo) -> Message:
        """Algorithm-specific upload after ``info``'s step."""

    @abc.abstractmethod
    def apply(self, message: Message) -> None:
        """Apply the algorithm-specific part of a server message."""

    @abc.abstractmethod
    def reported_model(self) -> nn.Module:
        """The model whose metrics are reported for this client."""

    def round_info(self) -> Dict[str, Any]:
        """Algorithm-specific details of the round just finished, stored in its metrics record."""
        return {}

    def epoch_models(self) -> Dict[str, nn.Module]:
        """The models ``prr_eval_every_epoch`` evaluates, by name (default: the reported one, ``model``)."""
        return {"model": self.reported_model()}

    def evaluate_epoch(self) -> None:
        """With ``prr_eval_every_epoch``, the test metrics of :meth:`epoch_models` now: algorithms call it
        at the end of every local epoch (none otherwise; docs/algorithm.md, "Diagnosis")."""
        if self.ctx.eval_every_epoch:
            self._epoch_evals.append(self._evaluate_models())

    def extra_state(self) -> Dict[str, Any]:
        """Algorithm state beyond ``self.models`` needed to resume (tensors and plain values)."""
        return {}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        """Inverse of :meth:`extra_state`."""

    # ----------------------------------------------------------------- helpers
    def make_optimizer(self, model: Union[nn.Module, Iterable[nn.Parameter]], round_idx: int) -> torch.optim.Optimizer:
        """SGD of the schedule at ``round_idx`` over a model's (or the given) parameters;
        re-created each round, as the reference."""
        s = self.ctx.schedule
        params = model.parameters() if isinstance(model, nn.Module) else model
        return torch.optim.SGD(params, lr=s.learning_rate_at(round_idx),
                               momentum=s.momentum, weight_decay=s.weight_decay)

    def _evaluate_reported(self, splits) -> Dict[str, Dict[str, float]]:
        model = self.reported_model()
        by_name = {"valid": self.valid_split, "test": self.test_split}
        return {name: self.task.evaluate(model, by_name[name], self.ctx.num_classes, self.ctx.eval_batch_size)
                for name in splits}

    def _evaluate_models(self) -> Dict[str, Dict[str, float]]:
        return {name: self.task.evaluate(model, self.test_split, self.ctx.num_classes, self.ctx.eval_batch_size)
                for name, model in self.epoch_models().items()}

    def _record_round(self, round_idx: int, *, received: bool = True, took_part: bool = True) -> None:
        before = self._before.pop(round_idx)
        replaced = received and self.REPORTED_MODEL_REPLACED_ON_RECEIVE
        after = self._evaluate_reported(("valid", "test")) if replaced else before
        metric = self.task.selection_metric  # macro-F1 (segmentation: Dice)
        f1_before, f1_after = before["test"][metric], after["test"][metric]
        retrogress = f1_after - f1_before if not (math.isnan(f1_before) or math.isnan(f1_after)) else float("nan")
        retrogress = retrogress if received else float("nan")  # nothing came from the server
        record = {
            "round": round_idx, "silo": self.ctx.silo, "client": self.ctx.data.name,
            "valid": after["valid"], "test": after["test"],
            "test_before_receive": before["test"], "retrogress": retrogress,
            **self.round_info(),
        }
        if self._epoch_evals and took_part:  # prr_eval_every_epoch, and the algorithm evaluates its epochs
            record["test_every_epoch"], self._epoch_evals = self._epoch_evals, []
            if received:
                record["test_after_receive"] = self._evaluate_models()
        record.update({k: False for k, v in (("received", received), ("took_part", took_part)) if not v})
        last_missed = round_idx - took_part  # it was absent (dropped out, or not sampled) in between:
        if last_missed > self._last_recorded:
            record["missed_rounds"] = list(range(self._last_recorded + 1, last_missed + 1))
        self._last_recorded = round_idx
        self._records.append(record)

    def _check_message(self, message: Mapping[str, Any]) -> None:
        if not isinstance(message, Mapping) or "step" not in message or "silo" not in message:
            raise ValueError(f"silo {self.ctx.silo}: a server message must be a dict with 'silo' and 'step', got {type(message).__name__}")
        if message["silo"] != self.ctx.silo:
            raise ValueError(f"silo {self.ctx.silo} received a message addressed to silo {message['silo']}")

    # ----------------------------------------------------------------- resume
    def state_dict(self) -> Dict[str, Any]:
        return {
            "models": {name: m.state_dict() for name, m in self.models.items()},
            "generator": self.generator.get_state(),
            "global_class_counts": self.global_class_counts,
            "before": self._before,
            "last_recorded": self._last_recorded,
            "in_next_round": self._in_next_round,
            "records": [dict(r) for r in self._records],  # made, not yet handed over (a client leaving the rounds)
            "extra": self.extra_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name, model in self.models.items():
            model.load_state_dict(state["models"][name])
        self.generator.set_state(state["generator"])
        self.global_class_counts = state["global_class_counts"]
        self._before = dict(state["before"])
        self._last_recorded = int(state.get("last_recorded", -1))
        self._in_next_round = bool(state.get("in_next_round", True))
        self._records = [dict(r) for r in state.get("records", [])]
        self.load_extra_state(state["extra"])


class FederatedServer(abc.ABC):
    """Server half of the protocol: handshake, message building, aggregation.

    Subclasses implement :meth:`aggregate_step` and :meth:`payload_for`.
    """

    STEPS_PER_ROUND: int = 1
    #: the algorithm's message fields and their types, beyond the protocol's own
    #: (``codec.PROTOCOL_MESSAGE``): what a client accepts from the wire
    MESSAGE_FIELDS: Mapping[str, Callable[[Any], Optional[str]]] = {}
    #: False when silos upload different fields (the Centralized reference: only silo 0 trains)
    UNIFORM_UPLOADS: bool = True

    def __init__(self, num_clients: int, schedule: TrainSchedule, params: Any, seed: int) -> None:
        if num_clients < 1:
            raise ValueError("a federation needs at least one client")
        self.num_clients = num_clients
        self.schedule = schedule
        self.params = params
        self.spr = steps_per_round(self.STEPS_PER_ROUND, schedule)
        self.generator = torch.Generator().manual_seed(7_919 * (seed + 1))
        self.global_class_counts: Optional[torch.Tensor] = None
        self.sample_counts: Dict[int, int] = {}
        #: the run's initial model state (the same weights every client starts from), for servers
        #: that hold the global model from the start (SCAFFOLD); set by training.setup.build_server
        self.initial_state: Optional[Dict[str, torch.Tensor]] = None

    @property
    def num_steps(self) -> int:
        return total_steps(self.spr, self.schedule)

    def messages(self, step: int, silos: Optional[Iterable[int]] = None) -> Dict[int, Message]:
        """Messages of ``step`` for ``silos`` (default: every silo); ``step == num_steps`` is the
        final delivery."""
        out = {}
        for silo in (range(self.num_clients) if silos is None else sorted(silos)):
            message: Message = {"silo": silo, "step": step, "final": step == self.num_steps}
            if 1 <= step < self.num_steps and (step - 1) % self.spr == 0:  # every round start: a silo that
                message["global_class_counts"] = self.global_class_counts.clone()  # joins late learns them too
            if step >= 1:
                message.update(self.payload_for(silo, step))
            out[silo] = message
        return out

    def aggregate(self, step: int, uploads: Mapping[int, Message]) -> None:
        """Aggregate the uploads of ``step``: one per silo that took part in the step.

        The handshake (step 0) needs every silo (the global class counts are their sum); a
        training step aggregates whichever silos uploaded (at least one): an absent silo keeps its
        state and is left out of every average (see docs/distributed.md, "A silo that misses a
        round").
        """
        if not uploads:
            raise ValueError(f"step {step}: no upload to aggregate")
        unknown = sorted(set(uploads) - set(range(self.num_clients)))
        missing = sorted(set(range(self.num_clients)) - set(uploads))
        if unknown:
            raise ValueError(f"step {step}: uploads from unknown silo(s) {unknown}")
        if step == 0 and missing:
            raise ValueError(f"step 0: the handshake needs every silo's class counts; none from silo(s) {missing}")
        for silo, upload in uploads.items():
            if upload.get("step") != step or upload.get("silo") != silo:
                raise ValueError(f"step {step}: silo {silo} sent an upload for silo {upload.get('silo')} step {upload.get('step')}")
        self.sample_counts.update({silo: int(u["num_samples"]) for silo, u in uploads.items()})
        if step == 0:
            self.global_class_counts = torch.stack([torch.as_tensor(uploads[s]["class_counts"]) for s in sorted(uploads)]).sum(0)
            return
        self.aggregate_step(step_info(step, self.spr, self.schedule), uploads)

    @abc.abstractmethod
    def aggregate_step(self, info: StepInfo, uploads: Mapping[int, Message]) -> None:
        """Algorithm-specific aggregation of a training step."""

    @abc.abstractmethod
    def payload_for(self, silo: int, step: int) -> Message:
        """Algorithm-specific part of silo's message at ``step`` (after aggregation of step-1)."""

    def extra_state(self) -> Dict[str, Any]:
        return {}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        pass

    def state_dict(self) -> Dict[str, Any]:
        return {"generator": self.generator.get_state(), "global_class_counts": self.global_class_counts,
                "sample_counts": dict(self.sample_counts), "extra": self.extra_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.global_class_counts = state["global_class_counts"]
        self.sample_counts = dict(state["sample_counts"])
        self.load_extra_state(state["extra"])

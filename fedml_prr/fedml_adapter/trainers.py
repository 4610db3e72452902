"""FedML ``ClientTrainer`` / ``ServerAggregator`` subclasses carrying the protocol of one run.

FedML's cross-silo managers move opaque "model params" between the server and the clients.  Ours
are the protocol messages of :mod:`fedml_prr.training.federated`: the aggregator returns a plain
``dict`` keyed by silo index (FedML's cross-silo server then sends each silo its own entry); a
client's upload is a dict carrying its ``silo`` and ``step``.  FedML never tells a trainer which
silo it serves, so the silo travels in every message.

- :class:`AlgorithmClientTrainer` serves one silo (one process per silo, as in a hospital
  network): it hands each server message to that silo's
  :class:`~fedml_prr.training.federated.FederatedClient` and uploads what the client produces.
- :class:`AlgorithmServerAggregator` hands the uploads to the run's
  :class:`~fedml_prr.training.coordinator.Coordinator` (validation, rollback, round records).

One step exists only on the wire (the single-process runtime does not need it): after the final
delivery (step ``N = num_steps``: clients evaluate the last round) comes the *report* step, whose
upload only carries the metric records of the last round; then the server's managers end the run
(:mod:`fedml_prr.fedml_adapter.managers`).

Metric records of a completed round travel to the server inside the next upload (``records``); a
client is told which round is the selected one (``selected_round``) so it can keep its best
checkpoint locally: personalized models never leave the silo.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from fedml.core import ClientTrainer, ServerAggregator

from ..algorithms.prr import PRRClient, PRRServer
from ..training.coordinator import Coordinator
from ..training.federated import FederatedClient, Message

logger = logging.getLogger(__name__)


class SiloHooks:
    """What a runtime does around one silo's protocol (persistence); every hook is optional."""

    def start(self, client: FederatedClient, step: int) -> None:
        """The first message this process receives is of ``step`` (> 0: the server resumed)."""

    def selected(self, client: FederatedClient, round_idx: int) -> None:
        """The server announces ``round_idx`` as the selected (best) round so far."""

    def round_completed(self, client: FederatedClient, records: List[Dict[str, Any]]) -> None:
        """``client`` finished evaluating a round (records as uploaded)."""

    def uploaded(self, client: FederatedClient, step: int) -> None:
        """``client`` uploaded step ``step``; its state is now that before the next message."""


def message_silo(message: Any) -> int:
    """The silo a protocol message names (a clear error for anything else)."""
    silo = message.get("silo") if isinstance(message, Mapping) else None
    if not isinstance(silo, int) or isinstance(silo, bool):
        raise ValueError(f"expected a protocol message (a dict with an integer 'silo'), got {type(message).__name__}")
    return silo


class AlgorithmClientTrainer(ClientTrainer):
    """FedML client trainer of one silo (see the module docstring).

    Parameters
    ----------
    model:
        Any module (FedML keeps a reference; the algorithm's client owns its own models).
    args:
        FedML's args (only handed to FedML's base class).
    client:
        The silo's :class:`FederatedClient`.
    num_steps:
        Protocol steps of the run (the report step comes after them).
    hooks:
        Persistence around the protocol (:class:`SiloHooks`).
    """

    def __init__(self, model, args, *, client: FederatedClient, num_steps: int,
                 hooks: Optional[SiloHooks] = None) -> None:
        super().__init__(model, args)
        self.client = client
        self.silo = client.ctx.silo
        self.num_steps = num_steps
        self.hooks = hooks or SiloHooks()
        self.step: Optional[int] = None
        self._outgoing: List[Dict[str, Any]] = []
        self.finished = False

    def set_model_params(self, model_parameters: Message) -> None:
        message = model_parameters
        if message_silo(message) != self.silo:
            raise ValueError(f"the client of silo {self.silo} received a message for silo {message['silo']}")
        step = int(message["step"])
        if self.step is None:
            self.hooks.start(self.client, step)
        if message.get("selected_round") is not None:
            self.hooks.selected(self.client, int(message["selected_round"]))
        self.client.receive(message)
        self.step = step
        self._take_records()

    def _take_records(self) -> None:
        records = self.client.pop_records()
        if records:
            self.hooks.round_completed(self.client, records)
            self._outgoing.extend(records)

    def train(self, train_data, device, args) -> None:
        """One protocol step (FedML's ``train_data`` is not used: the client holds its own splits,
        valid and test included, for per-client evaluation); nothing at the report step."""
        if self.step < self.num_steps:
            self.client.train(self.step)

    def get_model_params(self) -> Message:
        if self.step == self.num_steps:
            upload: Message = {"silo": self.silo, "step": self.step, "num_samples": len(self.client.train_split)}
        else:
            upload = self.client.upload()
        self._take_records()  # a client outside the next round's cohort records its round once trained
        upload["records"], self._outgoing = self._outgoing, []
        self.hooks.uploaded(self.client, self.step)
        return upload

    def finish(self, selected_round: Optional[int]) -> None:
        """The server's end of the run (its last word on the selected round)."""
        if selected_round is not None:
            self.hooks.selected(self.client, int(selected_round))
        self.finished = True

    def test(self, test_data, device, args):
        return None


class AlgorithmServerAggregator(ServerAggregator):
    """FedML server aggregator handing every step's uploads to the run's :class:`Coordinator`.

    Parameters
    ----------
    coordinator:
        Validation, rollback and round records (:mod:`fedml_prr.training.coordinator`).
    on_aggregated:
        Called after each successful training-step aggregation (resume checkpoints).
    """

    def __init__(self, model, args, *, coordinator: Coordinator,
                 on_aggregated: Optional[Callable[[Coordinator], None]] = None) -> None:
        super().__init__(model, args)
        self.coordinator = coordinator
        self.on_aggregated = on_aggregated

    @property
    def finishing(self) -> bool:
        """True at the report step (after the final delivery)."""
        return self.coordinator.step == self.coordinator.num_steps

    @property
    def finished(self) -> bool:
        """True once the clients have sent their reports (the end messages are next)."""
        return self.coordinator.step > self.coordinator.num_steps

    def messages_for(self, silos) -> Dict[int, Message]:
        """The current step's messages to ``silos``, each naming the selected round so far."""
        c = self.coordinator
        messages = c.messages(silos)
        for message in messages.values():
            message["selected_round"] = c.selected_round
        return messages

    def get_model_params(self) -> Dict[int, Message]:
        """FedML's name for :meth:`messages_for` the current participants."""
        return self.messages_for(self.coordinator.participants())

    def set_model_params(self, model_parameters) -> None:
        """FedML hands back what :meth:`aggregate` returned; the coordinator already holds it."""

    @staticmethod
    def uploads_by_silo(raw_client_model_or_grad_list: List[Tuple[float, Message]]) -> Dict[int, Message]:
        """FedML's ``[(num_samples, upload), ...]`` as ``{silo: upload}``."""
        uploads: Dict[int, Message] = {}
        for _, upload in raw_client_model_or_grad_list:
            silo = message_silo(upload)
            if silo in uploads:
                raise ValueError(f"two uploads for silo {silo}")
            uploads[silo] = upload
        return uploads

    def aggregate(self, raw_client_model_or_grad_list: List[Tuple[float, Message]]) -> Dict[int, Message]:
        """Aggregate the current step's uploads (the report step: only take their records); the
        round the current step's message closed is written with the records that came."""
        c = self.coordinator
        uploads = self.uploads_by_silo(raw_client_model_or_grad_list)
        closing = c.closing_round
        c.record(_records_of(uploads))
        if self.finishing:  # the report step: only records
            steps = {u.get("step") for u in uploads.values()}
            if steps - {c.step}:
                raise ValueError(f"report step {c.step}: got steps {sorted(map(str, steps))} from silos {sorted(uploads)}")
            c.step += 1
        else:
            c.aggregate({silo: {k: v for k, v in u.items() if k != "records"} for silo, u in uploads.items()})
        if closing is not None:
            c.close_round(closing)
        if not self.finished and self.on_aggregated is not None:
            self.on_aggregated(c)
        return self.get_model_params() if not self.finished else {}

    def test(self, test_data, device, args):
        return {}

    def test_all(self, train_data_local_dict, test_data_local_dict, device, args) -> bool:
        return True  # every client evaluates itself; FedML's server-side test is not used


def _records_of(uploads: Mapping[int, Message]) -> List[Dict[str, Any]]:
    """The metric records uploads carry, each checked to be its sender's."""
    records = []
    for silo in sorted(uploads):
        for record in uploads[silo].get("records", []):
            if not isinstance(record, Mapping) or record.get("silo") != silo:
                raise ValueError(f"silo {silo} uploaded a metric record of silo "
                                 f"{record.get('silo') if isinstance(record, Mapping) else record!r}")
            records.append(dict(record))
    return records


class PRRClientTrainer(AlgorithmClientTrainer):
    """PRR's DET + CPA client (a personalized model and a deputy) as a FedML ClientTrainer."""

    def __init__(self, model, args, *, client: FederatedClient, num_steps: int,
                 hooks: Optional[SiloHooks] = None) -> None:
        if not isinstance(client, PRRClient):
            raise TypeError(f"PRRClientTrainer needs a PRRClient, got {type(client).__name__}")
        super().__init__(model, args, client=client, num_steps=num_steps, hooks=hooks)


class PFAServerAggregator(AlgorithmServerAggregator):
    """PRR's server (Progressive Fourier Aggregation of the deputies, global prototypes) as a FedML
    ServerAggregator."""

    def __init__(self, model, args, *, coordinator: Coordinator,
                 on_aggregated: Optional[Callable[[Coordinator], None]] = None) -> None:
        if not isinstance(coordinator.server, PRRServer):
            raise TypeError(f"PFAServerAggregator needs a PRRServer, got {type(coordinator.server).__name__}")
        super().__init__(model, args, coordinator=coordinator, on_aggregated=on_aggregated)

"""FedML ``ClientTrainer`` / ``ServerAggregator`` subclasses running any registered algorithm.

FedML moves opaque "model params" between server and clients.  Ours are the protocol messages of
:mod:`fedml_prr.training.federated`: the server's ``get_model_params()`` and ``aggregate()``
return a plain ``dict`` keyed by silo index (FedML's cross-silo server then sends each silo its
own entry); a client's upload is a dict carrying its ``silo`` and ``step``.  FedML never tells a
trainer which silo it serves, so the silo travels in every message.  One trainer object can
serve several silos (as FedML's single-process simulator does): per-silo state is kept in
``self.clients`` keyed by silo index.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from fedml.core import ClientTrainer, ServerAggregator

from ..algorithms import AlgorithmSpec, get_algorithm
from ..training.federated import ClientContext, FederatedClient, FederatedServer, Message
from ..training.validation import UpdateValidator

logger = logging.getLogger(__name__)


class AlgorithmClientTrainer(ClientTrainer):
    """FedML client trainer driving one algorithm's :class:`FederatedClient` per silo.

    Parameters
    ----------
    model:
        Any module (FedML keeps a reference; the algorithm builds its own models).
    args:
        FedML's args (only handed to FedML's base class).
    spec:
        The registered algorithm.
    params:
        Its validated hyper-parameters.
    make_context:
        ``silo -> ClientContext`` (data, model factory, schedule, device of that silo).
    """

    def __init__(self, model, args, *, spec: AlgorithmSpec, params: Any,
                 make_context: Callable[[int], ClientContext]) -> None:
        super().__init__(model, args)
        self.spec = spec
        self.params = params
        self._make_context = make_context
        self.clients: Dict[int, FederatedClient] = {}
        self._step: Dict[int, int] = {}
        self.id = None

    def client(self, silo: int) -> FederatedClient:
        if silo not in self.clients:
            self.clients[silo] = self.spec.client(self._make_context(silo), self.params)
        return self.clients[silo]

    def set_id(self, trainer_id: int) -> None:
        """Select the silo the next ``train`` / ``get_model_params`` calls act on."""
        self.id = trainer_id

    def silo_of(self, message: Any) -> int:
        """The silo a server message is addressed to (a clear error for anything else)."""
        silo = message.get("silo") if isinstance(message, Mapping) else None
        if not isinstance(silo, int):
            raise ValueError(f"{self.spec.name} expects the server's per-silo message (a dict with an integer "
                             f"'silo'), got {type(message).__name__}")
        return silo

    def set_model_params(self, model_parameters: Message) -> None:
        silo = self.silo_of(model_parameters)
        self.client(silo).receive(model_parameters)
        self._step[silo] = model_parameters["step"]
        self.id = silo

    def train(self, train_data, device, args) -> None:
        """One protocol step for the selected silo (FedML's ``train_data`` is not used: the
        client holds its own splits, including valid/test for per-client evaluation)."""
        self.clients[self.id].train(self._step[self.id])

    def get_model_params(self) -> Message:
        return self.clients[self.id].upload()

    def test(self, test_data, device, args):
        return None


class AlgorithmServerAggregator(ServerAggregator):
    """FedML server aggregator wrapping one algorithm's :class:`FederatedServer`.

    Every step's uploads are checked by ``validator`` (when given) before the algorithm sees
    them, and an aggregation that fails half-way is rolled back: a bad update never costs the
    server its earlier state.
    """

    def __init__(self, model, args, *, server: FederatedServer, validator: Optional[UpdateValidator] = None) -> None:
        super().__init__(model, args)
        self.server = server
        self.validator = validator
        self.step = 0

    def get_model_params(self) -> Dict[int, Message]:
        """Messages of the current step, keyed by silo index."""
        return self.server.messages(self.step)

    def set_model_params(self, model_parameters) -> None:
        """FedML hands back what :meth:`aggregate` returned; the server already holds it."""

    @staticmethod
    def uploads_by_silo(raw_client_model_or_grad_list: List[Tuple[float, Message]]) -> Dict[int, Message]:
        """FedML's ``[(num_samples, upload), ...]`` as ``{silo: upload}``."""
        uploads: Dict[int, Message] = {}
        for _, upload in raw_client_model_or_grad_list:
            silo = upload.get("silo") if isinstance(upload, Mapping) else None
            if not isinstance(silo, int):
                raise ValueError(f"a client upload is not a protocol message with an integer 'silo' "
                                 f"(got {type(upload).__name__})")
            if silo in uploads:
                raise ValueError(f"two uploads for silo {silo}")
            uploads[silo] = upload
        return uploads

    def aggregate(self, raw_client_model_or_grad_list: List[Tuple[float, Message]]) -> Dict[int, Message]:
        uploads = self.uploads_by_silo(raw_client_model_or_grad_list)
        if self.validator is not None:
            self.validator.check(self.step, uploads)
        else:
            steps = {u.get("step") for u in uploads.values()}
            if steps != {self.step}:
                raise ValueError(f"expected uploads of step {self.step}, got steps {sorted(map(str, steps))}")
        snapshot = self.server.state_dict()
        try:
            self.server.aggregate(self.step, uploads)
        except Exception:
            self.server.load_state_dict(snapshot)  # the algorithm failed half-way: keep the earlier state
            raise
        self.step += 1
        return self.get_model_params()

    def test(self, test_data, device, args):
        return {}

    def test_all(self, train_data_local_dict, test_data_local_dict, device, args) -> bool:
        return True


class PRRClientTrainer(AlgorithmClientTrainer):
    """PRR's DET + CPA client (personalized model and deputy per silo)."""

    def __init__(self, model, args, *, params: Any, make_context: Callable[[int], ClientContext]) -> None:
        super().__init__(model, args, spec=get_algorithm("PRR"), params=params, make_context=make_context)


class PFAServerAggregator(AlgorithmServerAggregator):
    """PRR's server: Progressive Fourier Aggregation of the deputies, global prototypes."""

    def __init__(self, model, args, *, server: FederatedServer, validator: Optional[UpdateValidator] = None) -> None:
        if not isinstance(server, get_algorithm("PRR").server):
            raise TypeError("PFAServerAggregator needs a PRRServer")
        super().__init__(model, args, server=server, validator=validator)

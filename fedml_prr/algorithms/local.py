"""Local-only training: every client trains its own model on its own data; nothing is sent."""

from __future__ import annotations

from typing import Mapping

from ..training.codec import number
from ..training.federated import FederatedServer, Message, StepInfo
from .registry import register_algorithm
from .single_model import SingleModelClient


class LocalClient(SingleModelClient):
    REPORTED_MODEL_REPLACED_ON_RECEIVE = False
    UPLOAD_FIELDS = {"loss": number}

    def local_keys(self):
        return set(self.model.state_dict())  # everything stays on the client

    def payload(self, info: StepInfo) -> Message:
        return {"loss": self.last_loss}


class SilentServer(FederatedServer):
    """Receives only sample counts and losses; sends nothing but the protocol fields."""

    def aggregate_step(self, info: StepInfo, uploads: Mapping[int, Message]) -> None:
        pass

    def payload_for(self, silo: int, step: int) -> Message:
        return {}


SPEC = register_algorithm("Local", client=LocalClient, server=SilentServer)

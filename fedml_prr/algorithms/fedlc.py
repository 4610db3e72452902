"""FedLC (Zhang et al., ICML 2022): FedAvg with logits calibrated by the client's label counts,
``loss = CE(z - tau * n_c^{-1/4}, y)``, against label-distribution skew.  On segmentation the
counts are the client's pixel counts and every pixel's logits are calibrated (loss CE + Dice)."""

from __future__ import annotations

from .registry import register_algorithm
from .single_model import AveragingServer, SingleModelClient


class FedLCClient(SingleModelClient):
    def batch_loss(self, logits, features, targets):
        # classes absent locally count as 1 (the reference code divides by zero there)
        counts = self.class_counts.clamp_min(1).to(device=logits.device, dtype=logits.dtype)
        shift = counts.pow(-0.25).view(-1, *([1] * (logits.dim() - 2)))  # along the class axis
        return self.task.loss(logits - self.params.fedlc_tau * shift, targets)


SPEC = register_algorithm("FedLC", client=FedLCClient, server=AveragingServer)

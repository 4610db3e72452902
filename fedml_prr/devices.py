"""Host-to-device copies that do not stall the host.

A plain ``tensor.to("cuda")`` from ordinary (pageable) host memory makes the host wait until the
copy is done: one synchronisation per call.  Training draws its shuffling and augmentation from
CPU generators (one random stream on every device) and sends a few small tensors to the device
at every step, so each of those copies goes through pinned memory with a non-blocking copy; the
host runs ahead and the device never waits for Python.  Reading device data back on the host
(``.item()``, ``.tolist()``, ``.cpu()``) is the other kind of synchronisation; the training step
makes none (``tests/device_checks.py`` checks both).
"""

from __future__ import annotations

from typing import Union

import torch


def to_device(tensor: torch.Tensor, device: Union[torch.device, str]) -> torch.Tensor:
    """``tensor`` on ``device`` without making the host wait for the copy.

    Parameters
    ----------
    tensor:
        Any tensor; a CPU tensor bound for CUDA is first copied into pinned memory (page-locked,
        from torch's caching host allocator, which keeps the block until the copy has finished).
    device:
        The target device.

    Returns
    -------
    ``tensor`` itself when it is already on ``device``, else a copy there.  Values are never
    changed; the caller must not modify ``tensor`` before the device has used the copy (it never
    does here: the inputs are fresh CPU tensors).
    """
    device = torch.device(device)
    if tensor.device == device:
        return tensor
    if device.type == "cuda" and tensor.device.type == "cpu":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


__all__ = ["to_device"]

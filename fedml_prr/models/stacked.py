"""Several VGG16-slim copies run as one computation: stacked parameters, grouped convolutions.

``G`` models of the same architecture (for PRR: every client's personalized model and deputy)
keep their parameters stacked along a leading *slot* axis, ``[G, *shape]``.  A forward over a
subset of ``S`` slots folds the slots into the channel axis, ``[B, S * C, H, W]``, so each
convolution is one grouped convolution (``groups=S``), each BatchNorm one BatchNorm over
``S * C`` channels (per-slot, per-channel statistics and running buffers, exactly as ``S``
separate layers), and the two linear layers one batched matmul.  Slots never mix: the
gradient of a slot's loss reaches that slot's parameters only, and a slot outside the subset is
not touched at all (parameters, running statistics, ``num_batches_tracked``).

Every slot in one forward sees a batch of the same size ``B`` (its own images); callers group
slots by batch size (a client's last, smaller batch) and leave out slots with no batch.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .vgg_slim import VGG16Slim

Slots = Union[slice, torch.Tensor]


def _slot_selector(slots: Sequence[int], num_slots: int) -> Slots:
    """A ``slice`` when ``slots`` is a contiguous increasing run (views, no copies), else an index tensor."""
    slots = list(slots)
    if not slots or len(set(slots)) != len(slots) or min(slots) < 0 or max(slots) >= num_slots:
        raise ValueError(f"slots must be distinct indices in [0, {num_slots}), got {slots}")
    if slots == list(range(slots[0], slots[0] + len(slots))):
        return slice(slots[0], slots[0] + len(slots))
    return torch.tensor(slots, dtype=torch.long)


class StackedVGG16Slim(nn.Module):
    """``G`` :class:`~fedml_prr.models.vgg_slim.VGG16Slim` models with stacked state.

    Parameters
    ----------
    template:
        A VGG16-slim giving the architecture (width, classes, feature size) and BatchNorm
        settings; its weights are not used.
    num_slots:
        ``G``, the number of models.

    Notes
    -----
    Parameters and buffers are named like the template's state-dict keys with ``.`` replaced
    by ``__`` and carry a leading ``G`` axis (``num_batches_tracked`` is ``[G]``).  Load and
    store single models with :meth:`load_slot` and :meth:`store_slot`.
    """

    def __init__(self, template: nn.Module, num_slots: int) -> None:
        super().__init__()
        if not isinstance(template, VGG16Slim):
            raise TypeError(f"the batched engine supports vgg16_slim only, got {type(template).__name__}")
        if num_slots < 1:
            raise ValueError("num_slots must be >= 1")
        self.num_slots = num_slots
        self.num_classes = template.num_classes
        self.feature_dim = template.feature_dim
        self._keys: List[str] = []
        for key, value in template.state_dict().items():
            stacked = value.detach().unsqueeze(0).repeat(num_slots, *([1] * value.dim())).clone()
            if key in dict(template.named_parameters()):
                self.register_parameter(self._name(key), nn.Parameter(stacked))
            else:
                self.register_buffer(self._name(key), stacked)
            self._keys.append(key)
        # the layer sequence of the template, interpreted by forward()
        self._plan: List[Tuple[str, str, dict]] = []
        for name, module in template.features.named_modules():
            path = f"features.{name}"
            if isinstance(module, nn.Conv2d):
                if module.bias is not None or module.groups != 1:
                    raise TypeError("stacked convolutions need bias-free, ungrouped Conv2d layers")
                self._plan.append(("conv", path, {"stride": module.stride, "padding": module.padding,
                                                  "dilation": module.dilation}))
            elif isinstance(module, nn.BatchNorm2d):
                self._plan.append(("bn", path, self._bn_settings(module)))
            elif isinstance(module, nn.ReLU):
                self._plan.append(("relu", path, {}))
            elif isinstance(module, nn.MaxPool2d):
                self._plan.append(("maxpool", path, {"kernel_size": module.kernel_size, "stride": module.stride,
                                                     "padding": module.padding}))
        self._bn_fc1 = self._bn_settings(template.bn_fc1)

    @staticmethod
    def _name(key: str) -> str:
        return key.replace(".", "__")

    @staticmethod
    def _bn_settings(module: nn.modules.batchnorm._BatchNorm) -> dict:
        if module.momentum is None or not module.affine or not module.track_running_stats:
            raise TypeError("stacked BatchNorm needs affine layers with running stats and a fixed momentum")
        return {"momentum": module.momentum, "eps": module.eps}

    def tensor(self, key: str) -> torch.Tensor:
        """The stacked ``[G, ...]`` tensor of state-dict key ``key``."""
        return getattr(self, self._name(key))

    def keys(self) -> List[str]:
        return list(self._keys)

    # ----------------------------------------------------------------- single models in and out
    @torch.no_grad()
    def load_slot(self, slot: int, model: nn.Module) -> None:
        """Copy ``model``'s state into slot ``slot``."""
        state = model.state_dict()
        for key in self._keys:
            self.tensor(key)[slot].copy_(state[key])

    @torch.no_grad()
    def store_slot(self, slot: int, model: nn.Module) -> None:
        """Copy slot ``slot`` into ``model`` (its tensors are updated in place)."""
        state = model.state_dict()
        for key in self._keys:
            state[key].copy_(self.tensor(key)[slot])

    def slot_state(self, slot: int) -> Dict[str, torch.Tensor]:
        """Detached copies of slot ``slot``'s state, keyed like the template's state dict."""
        return {key: self.tensor(key)[slot].detach().clone() for key in self._keys}

    # ----------------------------------------------------------------- forward
    def _take(self, key: str, sel: Slots) -> torch.Tensor:
        value = self.tensor(key)
        return value[sel] if isinstance(sel, slice) else value.index_select(0, sel.to(value.device))

    def _batch_norm(self, x: torch.Tensor, prefix: str, sel: Slots, training: bool, settings: dict) -> torch.Tensor:
        weight = self._take(prefix + ".weight", sel).reshape(-1)
        bias = self._take(prefix + ".bias", sel).reshape(-1)
        mean_all, var_all = self.tensor(prefix + ".running_mean"), self.tensor(prefix + ".running_var")
        if isinstance(sel, slice):  # views: F.batch_norm updates the running statistics in place
            mean, var = mean_all[sel].view(-1), var_all[sel].view(-1)
        else:
            mean, var = self._take(prefix + ".running_mean", sel).reshape(-1), self._take(prefix + ".running_var", sel).reshape(-1)
        out = F.batch_norm(x, mean, var, weight, bias, training, settings["momentum"], settings["eps"])
        if training:
            with torch.no_grad():
                if not isinstance(sel, slice):
                    index = sel.to(mean_all.device)
                    mean_all.index_copy_(0, index, mean.view(len(index), -1))
                    var_all.index_copy_(0, index, var.view(len(index), -1))
                tracked = self.tensor(prefix + ".num_batches_tracked")
                if isinstance(sel, slice):
                    tracked[sel] += 1
                else:
                    tracked.index_add_(0, sel.to(tracked.device), torch.ones_like(sel, device=tracked.device))
        return out

    def forward(self, inputs: torch.Tensor, slots: Iterable[int], *, training: bool = True,
                channels_last: bool = False, grouped: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
        """Run the models of ``slots`` on their own batches.

        Parameters
        ----------
        inputs:
            ``[S, B, 3, H, W]``: slot ``slots[i]`` sees ``inputs[i]``.
        slots:
            ``S`` distinct slot indices.
        training:
            BatchNorm in training mode (batch statistics, running buffers updated) or eval mode.
        channels_last:
            Run the convolutions on channels-last activations.
        grouped:
            ``True``: slots folded into channels, one grouped convolution per layer (one kernel
            for all slots: what a GPU wants).  ``False``: one convolution per slot on views of
            the stacked weights (oneDNN on CPU runs grouped convolutions 1.5-2.5x slower than
            the same work as separate convolutions; see docs/performance.md).  Same math.

        Returns
        -------
        logits:
            ``[S, B, num_classes]``.
        features:
            ``[S, B, feature_dim]`` (post-ReLU), as :class:`VGG16Slim` returns per model.
        """
        slot_list = list(slots)
        sel = _slot_selector(slot_list, self.num_slots)
        if isinstance(sel, torch.Tensor):
            sel = sel.to(inputs.device)
        s, b = inputs.shape[:2]
        if s != len(slot_list):
            raise ValueError(f"{s} input batches for {len(slot_list)} slots")
        if grouped:
            pooled = self._conv_trunk(inputs.transpose(0, 1).reshape(b, -1, *inputs.shape[3:]), sel, s, training,
                                      channels_last)
            pooled = pooled.view(b, s, -1).transpose(0, 1)  # [S, B, C_last]
        else:
            pooled = torch.stack([self._conv_trunk(inputs[i], slice(slot, slot + 1), 1, training, channels_last)
                                  for i, slot in enumerate(slot_list)])
        hidden = torch.bmm(pooled, self._take("fc1.weight", sel).transpose(1, 2))  # [S, B, D]
        hidden = self._batch_norm(hidden.transpose(0, 1).reshape(b, -1), "bn_fc1", sel, training, self._bn_fc1)
        features = F.relu(hidden).view(b, s, -1).transpose(0, 1)
        logits = torch.bmm(features, self._take("fc2.weight", sel).transpose(1, 2))
        return logits, features

    def _conv_trunk(self, x: torch.Tensor, sel: Slots, s: int, training: bool, channels_last: bool) -> torch.Tensor:
        """Convolution blocks and global average pool of ``s`` slots folded into channels: ``[B, s * C_last]``."""
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for kind, path, settings in self._plan:
            if kind == "conv":
                weight = self._take(path + ".weight", sel)
                x = F.conv2d(x, weight.reshape(-1, *weight.shape[2:]), None, groups=s, **settings)
            elif kind == "bn":
                x = self._batch_norm(x, path, sel, training, settings)
            elif kind == "relu":
                x = F.relu(x)
            else:
                x = F.max_pool2d(x, **settings)
        return x.mean(dim=(2, 3))


def stacked_from_models(models: Sequence[nn.Module]) -> StackedVGG16Slim:
    """A :class:`StackedVGG16Slim` holding copies of ``models`` (slot ``i`` = ``models[i]``)."""
    stacked = StackedVGG16Slim(models[0], len(models))
    stacked.to(next(models[0].parameters()).device)
    for slot, model in enumerate(models):
        stacked.load_slot(slot, model)
    return stacked

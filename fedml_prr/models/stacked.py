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

from ..devices import to_device
from .vgg_slim import VGG16Slim

Slots = Union[slice, torch.Tensor]

#: how many shapes (slot counts, batch sizes) a compiled forward is specialised for before torch
#: falls back to eager (torch's default, 8, is below the shapes of one PRR epoch)
RECOMPILE_LIMIT = 64


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
        self._selectors: Dict[Tuple[Tuple[int, ...], torch.device], Slots] = {}
        self._compute_fn = self.compute  # compile_forward() swaps in the compiled one

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
    def selector(self, slots: Sequence[int], device: torch.device) -> Slots:
        """``slots`` as a ``slice`` (a contiguous run: views, no copies) or an index tensor on
        ``device``, made once per distinct ``slots`` and kept (no host-to-device copy per step)."""
        key = (tuple(slots), torch.device(device))
        sel = self._selectors.get(key)
        if sel is None:
            sel = _slot_selector(key[0], self.num_slots)
            if isinstance(sel, torch.Tensor):
                sel = to_device(sel, device)
            self._selectors[key] = sel
        return sel

    def _take(self, key: str, sel: Slots) -> torch.Tensor:
        value = self.tensor(key)
        return value[sel] if isinstance(sel, slice) else value.index_select(0, sel)

    def compile_forward(self, mode: str = "default", *, backend: str = "inductor") -> None:
        """Run the forward's computation (:meth:`compute`) through ``torch.compile`` from now on.

        :meth:`compute` sees tensors only (the slot selection, views and the write-back of the
        BatchNorm statistics stay outside), so one compiled graph serves every slot subset of a
        given shape; shapes that change (fewer clients left in an epoch, a last smaller batch)
        make torch recompile with dynamic sizes, up to :data:`RECOMPILE_LIMIT` times.
        ``mode`` is ``torch.compile``'s (``default``, ``reduce-overhead`` for CUDA graphs,
        ``max-autotune``, ...); ``backend`` is its backend (``aot_eager`` traces and runs the same
        kernels as eager, for checking the traced graph without code generation).
        """
        options = {"mode": mode} if backend == "inductor" else {}
        compiled = torch.compile(self.compute, backend=backend, dynamic=None, **options)

        def run(*args, **kwargs):
            with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
                return compiled(*args, **kwargs)

        self._compute_fn = run

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
        sel = self.selector(slot_list, inputs.device)
        if inputs.shape[0] != len(slot_list):
            raise ValueError(f"{inputs.shape[0]} input batches for {len(slot_list)} slots")
        tensors = {key: self._take(key, sel) for key in self._keys if not key.endswith("num_batches_tracked")}
        logits, features, stats = self._compute_fn(inputs, tensors, training, channels_last, grouped)
        if training:
            self._store_statistics(sel, stats)
        return logits, features

    @torch.no_grad()
    def _store_statistics(self, sel: Slots, stats: Dict[str, torch.Tensor]) -> None:
        """Write the selected slots' new running statistics back and count their batches."""
        for key, value in stats.items():
            target = self.tensor(key)
            if isinstance(sel, slice):
                target[sel].copy_(value)
            else:
                target.index_copy_(0, sel, value)
            if key.endswith(".running_mean"):
                tracked = self.tensor(key[:-len("running_mean")] + "num_batches_tracked")
                if isinstance(sel, slice):
                    tracked[sel] += 1
                else:
                    tracked.index_add_(0, sel, torch.ones_like(sel))

    def compute(self, inputs: torch.Tensor, tensors: Dict[str, torch.Tensor], training: bool,
                channels_last: bool, grouped: bool) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, torch.Tensor]]:
        """The forward of ``S`` selected slots from their tensors alone: nothing is modified.

        ``tensors`` maps every parameter and running-statistics key to the selected slots'
        ``[S, ...]`` tensors.  Returns ``(logits, features, statistics)``; in training mode
        ``statistics`` holds the new running mean and variance of every BatchNorm layer (what
        ``F.batch_norm`` computes, on copies), empty in eval mode.
        """
        s, b = inputs.shape[:2]
        if grouped:
            stats: Dict[str, torch.Tensor] = {}
            pooled = self._conv_trunk(inputs.transpose(0, 1).reshape(b, -1, *inputs.shape[3:]), tensors, s,
                                      training, channels_last, stats)
            pooled = pooled.view(b, s, -1).transpose(0, 1)  # [S, B, C_last]
        else:
            per_slot = [{} for _ in range(s)]
            pooled = torch.stack([self._conv_trunk(inputs[i], {k: v[i:i + 1] for k, v in tensors.items()}, 1,
                                                   training, channels_last, per_slot[i]) for i in range(s)])
            stats = {key: torch.cat([one[key] for one in per_slot]) for key in per_slot[0]}
        hidden = torch.bmm(pooled, tensors["fc1.weight"].transpose(1, 2))  # [S, B, D]
        hidden = self._batch_norm(hidden.transpose(0, 1).reshape(b, -1), "bn_fc1", tensors, s, training,
                                  self._bn_fc1, stats)
        features = F.relu(hidden).view(b, s, -1).transpose(0, 1)
        logits = torch.bmm(features, tensors["fc2.weight"].transpose(1, 2))
        return logits, features, stats

    @staticmethod
    def _batch_norm(x: torch.Tensor, prefix: str, tensors: Dict[str, torch.Tensor], s: int, training: bool,
                    settings: dict, stats: Dict[str, torch.Tensor]) -> torch.Tensor:
        """BatchNorm over ``s`` slots folded into channels; in training mode the new running
        statistics (``[s, C]``) go into ``stats``."""
        mean, var = tensors[prefix + ".running_mean"].reshape(-1), tensors[prefix + ".running_var"].reshape(-1)
        if training:  # F.batch_norm updates its running statistics in place: give it copies
            mean, var = mean.clone(), var.clone()
        out = F.batch_norm(x, mean, var, tensors[prefix + ".weight"].reshape(-1), tensors[prefix + ".bias"].reshape(-1),
                           training, settings["momentum"], settings["eps"])
        if training:
            stats[prefix + ".running_mean"], stats[prefix + ".running_var"] = mean.view(s, -1), var.view(s, -1)
        return out

    def _conv_trunk(self, x: torch.Tensor, tensors: Dict[str, torch.Tensor], s: int, training: bool,
                    channels_last: bool, stats: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Convolution blocks and global average pool of ``s`` slots folded into channels: ``[B, s * C_last]``."""
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for kind, path, settings in self._plan:
            if kind == "conv":
                weight = tensors[path + ".weight"]
                x = F.conv2d(x, weight.reshape(-1, *weight.shape[2:]), None, groups=s, **settings)
            elif kind == "bn":
                x = self._batch_norm(x, path, tensors, s, training, settings, stats)
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

"""A frozen copy of ``fedml_prr/core/fourier.py`` before issue 16: PFA on the full spectrum (``fftn``,
replace the band, real part of ``ifftn``).  tests/test_fourier.py compares the half-spectrum
implementation with it; the library does not use it."""

from __future__ import annotations

import enum
import math
from typing import Collection, Dict, List, Mapping, Optional, Sequence

import torch

StateDict = Dict[str, torch.Tensor]


def pfa_ratio(round_idx: int, total_rounds: int, start: float = 0.7, end: float = 0.95) -> float:
    """Shared low-frequency ratio of round ``round_idx``: ``start + (t / T) * (end - start)``.

    Parameters
    ----------
    round_idx:
        PRR round ``t`` in ``[0, total_rounds)``.
    total_rounds:
        ``T``, the number of PRR rounds of the run.
    """
    if total_rounds <= 0:
        raise ValueError(f"total_rounds must be positive, got {total_rounds}")
    if not 0 <= round_idx <= total_rounds:
        raise ValueError(f"round_idx must be in [0, {total_rounds}], got {round_idx}")
    return start + (round_idx / total_rounds) * (end - start)


def _normalised_weights(weights: Optional[Sequence[float]], k: int, like: torch.Tensor) -> torch.Tensor:
    """Weights summing to one as a real tensor on ``like``'s device (uniform when ``None``)."""
    if weights is None:
        return torch.full((k,), 1.0 / k, dtype=like.real.dtype if like.is_complex() else like.dtype,
                          device=like.device)
    w = torch.as_tensor(list(weights), dtype=torch.float64)
    if w.shape != (k,) or not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be {k} finite non-negative numbers with a positive sum, got {list(weights)}")
    w = w / w.sum()
    dtype = like.real.dtype if like.is_complex() else like.dtype
    return w.to(dtype=dtype, device=like.device)


def _weighted_mean(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Mean over dim 0 of ``x`` [K, ...] with weights ``w`` [K] summing to one."""
    return torch.tensordot(w, x, dims=([0], [0]))


def _band_indices(length: int, ratio: float) -> torch.Tensor:
    """Indices of the centred low-frequency band of an axis, in *unshifted* FFT order.

    The spec's box is ``[c - b, c + b)`` on the ``fftshift``-ed axis (``b = floor(n r / 2)``,
    ``c = floor(n / 2)``, clipped to the axis); shifted index ``i`` is unshifted frequency
    ``(i - c) mod n``, so the band is frequencies ``-b .. b-1`` (wrapped).  Working unshifted saves
    the two full-array shifts.
    """
    half = math.floor(length * ratio / 2)
    centre = length // 2
    return torch.arange(max(-half, -centre), min(half, length - centre)) % length


def fourier_mix(
    stacked: torch.Tensor,
    ratio: float,
    *,
    dims: int = 2,
    share_phase: bool = True,
    weights: Optional[Sequence[float]] = None,
) -> torch.Tensor:
    """Replace each client's low-frequency amplitude (and phase) by the clients' average.

    Spec section 1, steps 1-5, for the K clients at once.

    Parameters
    ----------
    stacked:
        Real tensor of the K clients' matrices: ``[K, h, w]`` when ``dims=2``, or
        ``[K, ..., D]`` when ``dims=1`` (every leading row transformed along the last axis).
    ratio:
        Fraction of each axis, centred on DC, that is shared (``r`` of the spec). ``0`` shares
        nothing; values above 1 are clipped to the full axis.
    dims:
        2 for a 2-D FFT over the last two axes, 1 for a 1-D FFT over the last axis.
    share_phase:
        ``True`` (TMI 2022) shares amplitude and phase; ``False`` shares amplitude only and keeps
        each client's phase (MICCAI 2021).
    weights:
        Optional non-negative weight per client for the average; ``None`` = uniform, as the
        reference code.  Amplitude and phase are averaged arithmetically (not circularly).

    Returns
    -------
    torch.Tensor
        Same shape and dtype as ``stacked``: client k's mixed matrix at index k.  Outside the band
        each client's own coefficients are kept exactly (no amplitude/phase round trip).
    """
    if dims not in (1, 2):
        raise ValueError(f"dims must be 1 or 2, got {dims}")
    if stacked.dim() < dims + 1:
        raise ValueError(f"stacked needs a client axis plus {dims} transform axes, got shape {tuple(stacked.shape)}")
    if ratio < 0:
        raise ValueError(f"ratio must be non-negative, got {ratio}")
    axes = tuple(range(-dims, 0))
    bands = [_band_indices(stacked.shape[a], ratio).to(stacked.device) for a in axes]
    if any(len(b) == 0 for b in bands):
        return stacked.clone()
    work = stacked if stacked.dtype in (torch.float32, torch.float64) else stacked.float()
    spectrum = torch.fft.fftn(work, dim=axes)
    index = (Ellipsis, bands[0][:, None], bands[1]) if dims == 2 else (Ellipsis, bands[0])
    block = spectrum[index]  # [K, ..., band...]
    amplitude = block.abs()
    w = _normalised_weights(weights, stacked.shape[0], amplitude)
    mean_amplitude = _weighted_mean(amplitude, w)
    if share_phase:  # the same coefficients for every client: one polar, broadcast on assignment
        spectrum[index] = torch.polar(mean_amplitude, _weighted_mean(block.angle(), w))
    else:  # keep each client's phase: rescale its unit phasor (angle 0 where the amplitude is 0)
        phasor = torch.where(amplitude > 0, block / amplitude.clamp_min(torch.finfo(amplitude.dtype).tiny),
                             torch.ones_like(block))
        spectrum[index] = mean_amplitude * phasor
    out = torch.fft.ifftn(spectrum, dim=axes).real
    return out.to(stacked.dtype)


class TensorRole(enum.Enum):
    """How PFA treats one entry of a state dict."""

    LOCAL = "local"  # BatchNorm parameters and buffers, and user-named local keys: never shared
    UNTOUCHED = "untouched"  # integer buffers (num_batches_tracked): each client's own
    CONV = "conv"  # 4-D conv weight -> one [C_in*kh, kw*N_out] matrix, 2-D transform
    LINEAR = "linear"  # 2-D weight other than the classifier, 2-D transform
    CLASSIFIER = "classifier"  # final classifier [C, D]: a 1-D transform per class row
    AVERAGE = "average"  # other float tensors (biases): weighted average, same for all


def infer_tensor_roles(
    state: Mapping[str, torch.Tensor],
    *,
    classifier_key: Optional[str] = None,
    local_keys: Collection[str] = (),
) -> Dict[str, TensorRole]:
    """Classify every key of a state dict for PFA.

    A module prefix ``p`` is BatchNorm when ``p.running_mean`` is in the state; all its entries
    are LOCAL.  ``classifier_key`` defaults to the last 2-D floating weight in the state's order
    (the final ``nn.Linear`` of a ``state_dict()``); a state without any 2-D weight (a segmentation
    net) takes its last ``[C, D, 1, 1]`` convolution, the per-pixel classifier, which is then
    mixed like a linear classifier (one 1-D transform per class row), not as a conv matrix.
    """
    bn_prefixes = {k[: -len("running_mean")] for k in state if k.endswith("running_mean")}
    if classifier_key is None:
        candidates = [k for k, v in state.items()
                      if v.dim() == 2 and v.is_floating_point() and not any(k.startswith(p) for p in bn_prefixes)]
        if not candidates:  # a segmentation net: its final 1x1 convolution is the per-pixel classifier
            candidates = [k for k, v in state.items() if v.dim() == 4 and tuple(v.shape[2:]) == (1, 1)
                          and v.is_floating_point() and not any(k.startswith(p) for p in bn_prefixes)]
        classifier_key = candidates[-1] if candidates else None
    elif classifier_key not in state:
        raise KeyError(f"classifier_key {classifier_key!r} is not in the state dict")
    unknown_local = set(local_keys) - set(state)
    if unknown_local:
        raise KeyError(f"local_keys not in the state dict: {sorted(unknown_local)}")

    roles: Dict[str, TensorRole] = {}
    for key, value in state.items():
        if key in local_keys or any(key.startswith(p) and "." not in key[len(p):] for p in bn_prefixes):
            roles[key] = TensorRole.LOCAL
        elif not value.is_floating_point():
            roles[key] = TensorRole.UNTOUCHED
        elif value.dim() == 4 and not (key == classifier_key and tuple(value.shape[2:]) == (1, 1)):
            roles[key] = TensorRole.CONV
        elif key == classifier_key:
            roles[key] = TensorRole.CLASSIFIER
        elif value.dim() == 2:
            roles[key] = TensorRole.LINEAR
        else:
            roles[key] = TensorRole.AVERAGE
    return roles


def _conv_to_matrix(w: torch.Tensor) -> torch.Tensor:
    """[K, N_out, C_in, kh, kw] -> [K, C_in*kh, kw*N_out] (the reference reshape)."""
    k, n_out, c_in, kh, kw = w.shape
    return w.permute(0, 2, 3, 4, 1).reshape(k, c_in * kh, kw * n_out)


def _matrix_to_conv(m: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Inverse of :func:`_conv_to_matrix` for a per-client conv ``shape``."""
    n_out, c_in, kh, kw = shape
    return m.reshape(-1, c_in, kh, kw, n_out).permute(0, 4, 1, 2, 3)


def _check_states(states: Sequence[Mapping[str, torch.Tensor]]) -> None:
    if len(states) == 0:
        raise ValueError("need at least one client state")
    keys = list(states[0].keys())
    for i, s in enumerate(states[1:], start=1):
        if list(s.keys()) != keys:
            missing = set(keys) ^ set(s.keys())
            raise ValueError(f"client {i}'s state has different keys from client 0's: {sorted(missing)[:5]}")
        for key in keys:
            if s[key].shape != states[0][key].shape:
                raise ValueError(f"client {i}'s {key!r} has shape {tuple(s[key].shape)}, "
                                 f"client 0's {tuple(states[0][key].shape)}")


def progressive_fourier_aggregate(
    states: Sequence[Mapping[str, torch.Tensor]],
    ratio: float,
    *,
    weights: Optional[Sequence[float]] = None,
    share_phase: bool = True,
    classifier_key: Optional[str] = None,
    local_keys: Collection[str] = (),
) -> List[StateDict]:
    """PFA over K deputy state dicts; returns K new state dicts, client k's at index k.

    Per-tensor rules (spec section 1): BatchNorm parameters and buffers and ``local_keys`` stay
    each client's own; integer buffers pass through; conv weights are mixed as one
    ``[C_in*kh, kw*N_out]`` matrix; other 2-D weights as matrices; the final classifier row by
    row (1-D); other float tensors are replaced by their weighted average.  One batched FFT per
    tensor name covers all K clients.

    Parameters
    ----------
    states:
        K state dicts with identical keys and shapes.  Not mutated.
    ratio:
        Shared low-frequency ratio, usually :func:`pfa_ratio`.
    weights:
        Optional per-client weights (e.g. sample counts) for every average; ``None`` = uniform.
    share_phase:
        ``False`` shares amplitude only (the MICCAI 2021 variant).
    classifier_key, local_keys:
        See :func:`infer_tensor_roles`.

    Returns
    -------
    list of dict
        Fresh tensors with each input's dtype and device.
    """
    _check_states(states)
    roles = infer_tensor_roles(states[0], classifier_key=classifier_key, local_keys=local_keys)
    outputs: List[StateDict] = [dict() for _ in states]
    for key, role in roles.items():
        if role in (TensorRole.LOCAL, TensorRole.UNTOUCHED):
            for out, state in zip(outputs, states):
                out[key] = state[key].detach().clone()
            continue
        stacked = torch.stack([s[key].detach() for s in states])
        if role is TensorRole.AVERAGE:
            w = _normalised_weights(weights, len(states), stacked.float())
            mixed = _weighted_mean(stacked.float(), w).to(stacked.dtype).expand_as(stacked)
        elif role is TensorRole.CONV:
            matrix = fourier_mix(_conv_to_matrix(stacked), ratio, dims=2, share_phase=share_phase, weights=weights)
            mixed = _matrix_to_conv(matrix, stacked.shape[1:])
        elif role is TensorRole.LINEAR:
            mixed = fourier_mix(stacked, ratio, dims=2, share_phase=share_phase, weights=weights)
        else:  # CLASSIFIER [C, D] (or a 1x1 conv [C, D, 1, 1]): each class row its own 1-D transform
            mixed = fourier_mix(stacked.flatten(2), ratio, dims=1, share_phase=share_phase,
                                weights=weights).reshape(stacked.shape)
        for k, out in enumerate(outputs):
            out[key] = mixed[k].clone()
    return outputs

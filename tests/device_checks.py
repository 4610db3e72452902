"""Checks of the accelerator path, runnable with or without pytest.

``tests/test_cuda.py`` runs them under pytest (marker ``cuda``, skipped without a GPU);
``run_scripts/gpu_check.py`` imports this module directly, because the GPU machine has no
pytest, and runs the same checks on ``--device cpu --smoke`` in the default test suite.  Each
check takes the device and a scratch folder, raises ``AssertionError`` naming what is wrong, and
returns the figures it measured (kept in gpu_check's JSON).

Tolerances, all stated per check:

- one round on the device vs the same round on the CPU (every registered algorithm, TF32 off):
  every state tensor within 2 % of the round's own change of that tensor on the CPU (+1e-6);
- the batched engine's grouped vs per-slot convolutions on the device: one stacked step's
  gradients within 2e-4 of each tensor's largest gradient (the CPU test's tolerance), and one
  PRR epoch at lr 0.002 within 1e-5 (the CPU test's tolerance for grouped vs the loop);
- ``prr_compile`` (not in :data:`CHECKS`): one PRR epoch at lr 0.002 within 1e-4 of eager;
- bf16 autocast: every loss finite, the mean training loss falls from the first to the last
  round, parameters and BatchNorm buffers stay float32;
- the training step: on CUDA, no synchronising call in a whole epoch's optimisation steps
  (``torch.cuda.set_sync_debug_mode("error")``) and, in the profiler, no device-to-host copy and
  no copy from pageable host memory; on the CPU the same epoch runs on the data-less ``meta``
  device, where any read of device data (``.item()``, ``.tolist()``, ``.cpu()``, ``nonzero``)
  raises, every host-to-device copy must be non-blocking, and a warm epoch makes at most one
  copy per client (its index batches) plus 9 per step (the augmentation draws of all clients).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fedml_prr.algorithms import ALGORITHMS
from fedml_prr.api import make_config
from fedml_prr.models.stacked import stacked_from_models
from fedml_prr.models.vgg_slim import VGG16Slim
from fedml_prr.runtime.sp import LocalFederation, build_local_federation
from fedml_prr.training.federated import step_info
from fedml_prr.training.loops import batch_indices

from fedtiny import TINY, tiny_federation

ROUND_TOLERANCE = 0.02  # of each tensor's own change in the round
ROUND_FLOOR = 1e-6
STEP_GRAD_TOLERANCE = 2e-4  # of each tensor's largest gradient
ENGINE_TOLERANCE = 1e-5  # absolute, one PRR epoch at lr 0.002
COMPILE_TOLERANCE = 1e-4  # absolute, one PRR epoch at lr 0.002 (fused kernels sum in their own order)
#: host-to-device copies of a warm training step: every client's augmentation draws go together
#: (flips x2, brightness, the median / blur / noise samples and the noise, the affine samples and
#: their maps); a member's index batches go once per epoch
MAX_COPIES_PER_STEP = 9
#: algorithms of the CPU smoke run (the GPU run checks every registered one)
SMOKE_ALGORITHMS = ("PRR", "FedAvg")


@contextlib.contextmanager
def exact_float32():
    """No TF32 in convolutions and matmuls on CUDA (its 10-bit mantissa is not what the CPU computes)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def participants(tmp: Path, algorithm: str, device: str, *, epochs: int = 1, lr: float = 0.002,
                 **prr: Any) -> LocalFederation:
    """The tiny 3-client federation's parties of ``algorithm`` on ``device``."""
    doc = copy.deepcopy(TINY)
    doc["train_args"].update(epochs=epochs, learning_rate=lr)
    doc["prr_args"].update(prr, prr_device=device, prr_fedrep_head_epochs=1,
                           prr_results_dir=str(Path(tmp) / f"{algorithm}_{device}"))
    return build_local_federation(make_config(doc, algorithm=algorithm), tiny_federation())


def states(parties: LocalFederation) -> Dict[str, torch.Tensor]:
    """Every model tensor of every client, on the CPU, float64 where floating."""
    out = {}
    for silo, client in parties.clients.items():
        for name, model in client.models.items():
            for key, value in model.state_dict().items():
                value = value.detach().cpu()
                out[f"{silo}.{name}.{key}"] = value.double() if value.is_floating_point() else value.clone()
    return out


def run_round(parties: LocalFederation) -> None:
    """Handshake and the first algorithm round, its server message delivered."""
    spr = parties.clients[0].spr
    for _ in range(1 + spr):
        parties.step()
    parties.deliver()


# --------------------------------------------------------------------------- the checks
def check_algorithms_match_cpu(device: str, tmp: Path, algorithms: Optional[Iterable[str]] = None) -> Dict[str, Any]:
    """One round of each algorithm on ``device`` ends where the same round on the CPU ends."""
    worst: Dict[str, float] = {}
    failures: List[str] = []
    with exact_float32():
        for name in algorithms or ALGORITHMS.names():
            runs = []
            for where in ("cpu", device):
                parties = participants(Path(tmp) / f"{where}{len(runs)}", name, where)
                before = states(parties)
                run_round(parties)
                runs.append((before, states(parties)))
            (init, on_cpu), (_, on_device) = runs
            worst[name] = 0.0
            for key, value in on_cpu.items():
                if not value.is_floating_point():
                    if not torch.equal(value, on_device[key]):
                        failures.append(f"{name} {key}: {on_device[key].tolist()} on {device}, {value.tolist()} on cpu")
                    continue
                change = (value - init[key]).abs().max().item()
                difference = (on_device[key] - value).abs().max().item()
                allowed = ROUND_TOLERANCE * change + ROUND_FLOOR
                worst[name] = max(worst[name], difference / allowed)
                if difference > allowed:
                    failures.append(f"{name} {key}: differs by {difference:.2e} on {device}, the round changed it by "
                                    f"{change:.2e}")
    assert not failures, "; ".join(failures[:5]) + (f" (and {len(failures) - 5} more)" if len(failures) > 5 else "")
    return {"algorithms": len(worst), "worst_difference_over_allowed": worst,
            "tolerance": f"{ROUND_TOLERANCE} x the round's change + {ROUND_FLOOR}"}


def one_prr_epoch(folder: Path, device: str, **engine) -> Dict[str, torch.Tensor]:
    """Every state tensor after the handshake and one PRR epoch of the batched engine (options ``engine``).

    On a CPU it runs with oneDNN off: oneDNN picks its own kernels per layout, and their rounding
    grows over the epoch (measured in :func:`check_grouped_matches_per_slot`), so two engine variants are
    compared on PyTorch's native kernels.  On CUDA both run cuDNN, as in training.
    """
    parties = participants(folder, "PRR", device, prr_engine="batched", **engine)
    with torch.backends.mkldnn.flags(enabled=False) if device == "cpu" else contextlib.nullcontext():
        for _ in range(2):  # handshake + one epoch
            parties.step()
    return states(parties)


def epoch_difference(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> float:
    """Largest absolute difference between two runs' floating-point state tensors."""
    return max((a[k] - b[k]).abs().max().item() for k in a if a[k].is_floating_point())


def check_grouped_matches_per_slot(device: str, tmp: Path) -> Dict[str, Any]:
    """Grouped and per-slot convolutions of the batched engine agree on ``device``."""
    with exact_float32():
        torch.manual_seed(0)
        nets = [VGG16Slim(3, width=0.25).to(device) for _ in range(3)]
        x = torch.randn(2, 8, 3, 32, 32, device=device)
        y = torch.randint(0, 3, (2, 8), device=device)
        grads = []
        for grouped in (True, False):
            stacked = stacked_from_models(nets)
            logits, _ = stacked(x, [2, 0], grouped=grouped, channels_last=True)
            sum(torch.nn.functional.cross_entropy(logits[i], y[i]) for i in range(2)).backward()
            grads.append({k: p.grad.detach().double() for k, p in stacked.named_parameters()})
        step = max(((grads[0][k] - grads[1][k]).abs().max() / grads[1][k].abs().max().clamp_min(1e-12)).item()
                   for k in grads[0])
        assert step <= STEP_GRAD_TOLERANCE, f"one step's gradients differ by {step:.2e} of their largest value"
        # One epoch: with oneDNN, its per-layout kernels' rounding (~1e-7, within the step check above)
        # grew to 1e-3..1e-2 (AVX2 EPYC: grouped vs per-slot 1.6e-2, per-slot with vs without oneDNN
        # 2.2e-3), so one_prr_epoch runs a CPU on native kernels and the epoch compares the engine's
        # grouping and masking exactly.  Contiguous activations: channels-last kernels change float
        # results on their own.
        epoch = epoch_difference(*(one_prr_epoch(Path(tmp) / mode, device, prr_conv_mode=mode, prr_channels_last=False)
                                   for mode in ("grouped", "per_slot")))
    assert epoch <= ENGINE_TOLERANCE, f"one PRR epoch differs by {epoch:.2e} between grouped and per-slot convolutions"
    return {"step_gradient_relative_difference": step, "epoch_weight_difference": epoch,
            "tolerances": {"step": STEP_GRAD_TOLERANCE, "epoch": ENGINE_TOLERANCE}}


def check_bf16_trains(device: str, tmp: Path) -> Dict[str, Any]:
    """PRR on the batched engine under bf16 autocast: finite, falling losses; float32 state."""
    parties = participants(Path(tmp), "PRR", device, epochs=2, lr=0.05, prr_engine="batched", prr_bf16=True)
    parties.step()  # handshake
    epoch_means = []
    for _ in range(parties.coordinator.num_steps - 1):
        parties.step()
        epoch_losses = [c.last_epoch[k] for c in parties.clients.values() for k in ("loss_personal", "loss_deputy")]
        assert all(math.isfinite(v) for v in epoch_losses), f"a bf16 loss is not finite: {epoch_losses}"
        epoch_means.append(sum(epoch_losses) / len(epoch_losses))
    assert epoch_means[-1] < epoch_means[0], f"bf16 training loss did not fall: {epoch_means}"
    dtypes = {str(v.dtype) for c in parties.clients.values() for m in c.models.values()
              for v in m.state_dict().values() if v.is_floating_point()}
    assert dtypes == {"torch.float32"}, f"bf16 training left state in {dtypes}"
    return {"mean_loss_per_epoch": epoch_means}


def check_step_stays_on_device(device: str, tmp: Path) -> Dict[str, Any]:
    """A whole epoch of the batched engine's optimisation steps waits for nothing on the device.

    CUDA: data and models on the device, then in PRR runs (float32 and bf16) one epoch's steps
    under sync debug mode ``error``, the next one's in the profiler, and the synchronising calls
    of a whole protocol step counted (the epoch boundary's reads: stage check, losses, uploads).  CPU: the epoch runs on
    the ``meta`` device (see the module docstring).
    """
    if device == "cpu":
        return _meta_audit(tmp)
    out: Dict[str, Any] = {}
    for bf16 in (False, True):
        parties = participants(Path(tmp) / f"bf16_{bf16}", "PRR", device, epochs=3, lr=0.05, prr_engine="batched",
                               prr_bf16=bf16)
        cohort = parties.clients[0].cohort
        placed = {t.device.type for c in parties.clients.values()
                  for t in [c.train_split.images, c.train_split.labels, *c.personal.parameters(), *c.deputy.parameters()]}
        placed |= {t.device.type for t in cohort.stacked.parameters()}
        assert placed == {"cuda"}, f"data or models off the device: {sorted(placed)}"
        for _ in range(2):  # handshake, epoch 0 (warm-up: allocations, kernel choice)
            parties.step()
        syncs: List[int] = []
        cohort.step_context = lambda: _sync_counter(syncs, fail=True)
        parties.step()  # epoch 1: any synchronising call in its optimisation steps raises
        profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                      torch.profiler.ProfilerActivity.CUDA])
        cohort.step_context = lambda: profiler
        parties.step()  # epoch 2, profiled
        cohort.step_context = contextlib.nullcontext
        whole: List[int] = []
        with _sync_counter(whole, fail=False):  # a whole protocol step: the epoch boundary reads on the host
            parties.step()
        copies = [e.name for e in profiler.events() if e.name.startswith("Memcpy")]
        to_device = [e for e in copies if "HtoD" in e]
        assert to_device, f"the profiler recorded no host-to-device copy (its copies: {sorted(set(copies))})"
        to_host = [e for e in copies if "DtoH" in e]
        pageable = [e for e in to_device if "Pageable" in e]
        assert not to_host, f"the training step copies from the device to the host: {to_host[:3]}"
        assert not pageable, f"host-to-device copies from pageable memory: {pageable[:3]}"
        out["bf16" if bf16 else "float32"] = {"synchronisations_in_epoch_steps": sum(syncs),
                                              "synchronisations_in_whole_protocol_step": sum(whole),
                                              "host_to_device_copies_in_epoch": len(to_device),
                                              "copy_kinds": sorted(set(copies))}
    return out


@contextlib.contextmanager
def _sync_counter(counts: List[int], fail: bool):
    """CUDA's sync debug mode around the block (``error`` when ``fail``, else ``warn``); appends the
    number of synchronising calls seen to ``counts``."""
    torch.cuda.set_sync_debug_mode("error" if fail else "warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
        counts.append(sum("synchroniz" in str(w.message) for w in caught))
    finally:
        torch.cuda.set_sync_debug_mode("default")


class _CopyAudit(TorchDispatchMode):
    """Records every copy between devices made while active."""

    def __init__(self) -> None:
        super().__init__()
        self.copies: List[tuple] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten._to_copy.default and "device" in kwargs:
            self.copies.append((str(args[0].device), str(kwargs["device"]), bool(kwargs.get("non_blocking", False))))
        elif func is torch.ops.aten.copy_.default and args[0].device != args[1].device:
            self.copies.append((str(args[1].device), str(args[0].device), bool(args[2] if len(args) > 2 else False)))
        return func(*args, **kwargs)


def _meta_audit(tmp: Path) -> Dict[str, Any]:
    out = {}
    for mode in ("grouped",):  # CUDA's convolutions (meta kernels run in Python: one mode keeps this short)
        parties = participants(Path(tmp) / mode, "PRR", "cpu", epochs=2, prr_engine="batched", prr_conv_mode=mode)
        parties.step()  # handshake
        parties.deliver()
        meta = torch.device("meta")
        for client in parties.clients.values():
            client.ctx = dataclasses.replace(client.ctx, device=meta)
            client.train_split = client.train_split.to(meta)
            for model in client.models.values():
                model.to(meta)
        cohort = parties.clients[0].cohort
        cohort.device = meta
        cohort.stacked.to(meta)
        info = step_info(parties.coordinator.step, parties.clients[0].spr, parties.clients[0].ctx.schedule)
        member_loss = cohort.epoch_loss(cohort.begin_epochs(info))
        cohort.load_slots()
        audits = []
        for _ in range(2):  # the first epoch also makes the cached device tensors; the second is counted
            with _CopyAudit() as audit:
                cohort.train_epoch(member_loss, info.round_idx, cohort.momentum_state)
            audits.append(audit.copies)
            to_host = [c for c in audit.copies if c[1] == "cpu"]
            blocking = [c for c in audit.copies if c[0] == "cpu" and not c[2]]
            assert not to_host, f"the training step copies device data to the host: {to_host[:3]}"
            assert not blocking, f"blocking host-to-device copies in the training step: {blocking[:3]}"
        largest = max(len(c.train_split) for c in cohort.members)
        steps = sum(1 for _ in batch_indices(largest, cohort.members[0].ctx.schedule.batch_size, torch.Generator()))
        allowed = len(cohort.members) + MAX_COPIES_PER_STEP * steps
        assert len(audits[1]) <= allowed, (f"{len(audits[1])} host-to-device copies in an epoch of {steps} steps; "
                                           f"expected at most {allowed} (the index batches, then the augmentation draws)")
        out[mode] = {"steps": steps, "first_epoch_copies": len(audits[0]), "warm_epoch_copies": len(audits[1])}
    return out


def check_compile_matches_eager(device: str, tmp: Path) -> Dict[str, Any]:
    """``prr_compile: true`` trains one PRR epoch (batched engine, float32) as the eager engine does.

    Not in :data:`CHECKS`: compiling takes a minute on a GPU and minutes on a CPU, so
    gpu_check's ``compile`` part and a ``cuda`` test run it.
    """
    with exact_float32():
        difference = epoch_difference(*(one_prr_epoch(Path(tmp) / f"compiled_{compiled}", device, prr_compile=compiled)
                                        for compiled in (False, True)))
    assert difference <= COMPILE_TOLERANCE, f"one compiled PRR epoch differs from eager by {difference:.2e}"
    return {"epoch_weight_difference": difference, "tolerance": COMPILE_TOLERANCE}


CHECKS: Dict[str, Callable[..., Dict[str, Any]]] = {
    "algorithms_match_cpu": check_algorithms_match_cpu,
    "grouped_matches_per_slot": check_grouped_matches_per_slot,
    "bf16_trains": check_bf16_trains,
    "step_stays_on_device": check_step_stays_on_device,
}

"""PRR: Personalized Retrogress-Resilient federated learning (Chen et al., IEEE TMI 2022).

Client: a personalized model P_k (never sent) and a deputy D_k (the only model exchanged),
trained together with Deputy-Enhanced Transfer (stage-dependent mutual distillation) and the
Conjoint Prototype-Aligned loss.  Server: Progressive Fourier Aggregation of the deputies, one
aggregated deputy per client, and a global class prototype after every local epoch.

One protocol step = one local epoch (``STEPS_PER_ROUND = E``): clients upload prototypes every
step and their deputy at the round's last step; the server answers with the global prototype and,
at round boundaries, each client's own PFA-aggregated deputy.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import torch
from torch import nn

from ..config.algorithms import PRRParams
from ..core.cpa import prototype_factor, seesaw_matrix
from ..core.det import Stage, select_stage, stage_losses
from ..core.averaging import average_keeping_local
from ..core.fourier import TensorRole, infer_tensor_roles, pfa_ratio, progressive_fourier_aggregate
from ..core.metrics import macro_f1
from ..devices import to_device
from ..core.prototypes import PrototypeAccumulator, global_prototype, reset_prototypes
from ..training.codec import integer, optional, state, tensor
from ..training.federated import ClientContext, FederatedClient, FederatedServer, Message, StepInfo, cpu_state
from ..training.loops import training_batches
from ..training.tasks import ScoreTracker
from .registry import get_algorithm, register_algorithm

class PRRClient(FederatedClient):
    """Per-silo PRR state: P_k, D_k, prototypes, DET stage."""

    STEPS_PER_ROUND = -1  # one step per local epoch
    REPORTED_MODEL_REPLACED_ON_RECEIVE = False  # P_k is never overwritten by the server
    UPLOAD_FIELDS = {"prototypes": tensor, "prototype_counts": tensor, "stage": integer, "deputy": state}

    def __init__(self, ctx: ClientContext, params: PRRParams) -> None:
        super().__init__(ctx, params)
        self.deputy = ctx.build_model().to(ctx.device)
        self.single_model = not params.use_det
        if self.single_model:  # "without DET": the deputy is the only model, and it is reported
            self.personal = self.deputy
            self.models = {"deputy": self.deputy}
            self.REPORTED_MODEL_REPLACED_ON_RECEIVE = True
        else:
            self.personal = ctx.build_model().to(ctx.device)
            self.models = {"personal": self.personal, "deputy": self.deputy}
        self.feature_dim = int(self.personal.feature_dim)
        self.local_protos = reset_prototypes(ctx.num_classes, self.feature_dim)
        self.local_proto_counts = torch.zeros(ctx.num_classes, dtype=torch.int64)
        self.global_protos: Optional[torch.Tensor] = None
        self.stage = Stage.START
        self.previous_trackers: Optional[Dict[str, ScoreTracker]] = None
        self.optimizers: Dict[str, torch.optim.Optimizer] = {}
        self.last_epoch: Dict[str, Any] = {}
        self.epoch_log: list = []  # one entry per local epoch of the current round
        #: the diagnosis of the round boundary in progress (``prr_diagnostics``): validation score of
        #: P and of the deputy it trained before the upload, of the deputy received after
        self.boundary: Dict[str, Optional[float]] = {}

    # ----------------------------------------------------------------- protocol hooks
    def apply(self, message: Message) -> None:
        if message.get("global_prototypes") is not None:
            self.global_protos = torch.as_tensor(message["global_prototypes"]).float()
        if "deputy" in message:
            self.deputy.load_state_dict(message["deputy"])
            if self.params.diagnostics and self.boundary:
                self.boundary["deputy_after"] = self._valid_score(self.deputy)

    def train(self, step: int) -> None:
        self.boundary = {}  # a message that closes no round carries no deputy to score
        super().train(step)

    def round_trained(self, info: StepInfo) -> None:
        """``prr_diagnostics``: the validation score of P (the base class's before-receive evaluation)
        and of the deputy about to be uploaded; the received deputy's is added in :meth:`apply`."""
        if self.params.diagnostics:
            personal = self._before[info.round_idx]["valid"][self.task.selection_metric]
            deputy = personal if self.single_model else self._valid_score(self.deputy)
            self.boundary = {"personal_before": personal, "deputy_before": deputy, "deputy_after": None}

    def local_step(self, info: StepInfo) -> None:
        epoch = self.begin_epoch(info)
        self.personal.train()
        self.deputy.train()
        for x, y in training_batches(self.train_split, self.ctx.schedule.batch_size, self.generator,
                                     augment=self.ctx.augment):
            z_p, f_p = self.personal(x)
            z_d = z_p if self.single_model else self.deputy(x)[0]
            loss_p, loss_d, total = epoch.losses(z_p, z_d, y)
            for opt in self.optimizers.values():
                opt.zero_grad(set_to_none=True)
            total.backward()
            for opt in self.optimizers.values():
                opt.step()
            epoch.record(z_p, f_p, z_d, y, loss_p, loss_d)
        self.end_epoch(epoch)

    # ----------------------------------------------------------------- one epoch, for both engines
    def begin_epoch(self, info: StepInfo, train_predictions=None) -> "PRREpoch":
        """Round-start resets, the DET stage of the coming epoch and its CPA factor.

        Both engines call this, then :meth:`PRREpoch.losses` and :meth:`PRREpoch.record` for every
        batch, then :meth:`end_epoch`.  ``train_predictions``: see :meth:`_stage_f1` (the batched
        engine computes them for all clients at once).
        """
        if info.first_of_round:
            self.stage = Stage.START
            self.local_protos = reset_prototypes(self.ctx.num_classes, self.feature_dim)
            self.local_proto_counts.zero_()
            self.previous_trackers = None
            self.optimizers = {name: self.make_optimizer(m, info.round_idx) for name, m in self.models.items()}
            self.epoch_log = []
        f1_personal, f1_deputy = self._stage_f1(train_predictions)
        self.stage = select_stage(f1_personal, f1_deputy, self.stage, self.params.det_a1, self.params.det_a2)
        return PRREpoch(self, f1_personal, f1_deputy, self._prototype_gamma(info.round_idx), self._seesaw())

    def end_epoch(self, epoch: "PRREpoch") -> None:
        """Keep the epoch's prototypes, the trackers of P's and D's training predictions (scored only
        if the next stage check asks), the mean losses, stage and stage-check scores."""
        self.local_protos, self.local_proto_counts = (t.cpu() for t in epoch.accumulator.prototypes())
        self.previous_trackers = dict(epoch.trackers)
        mean_losses = (epoch.loss_sums / max(epoch.batches, 1)).tolist()
        name = self.task.score_name  # f1 (segmentation: dice)
        self.last_epoch = {"loss_personal": mean_losses[0], "loss_deputy": mean_losses[1], "stage": int(epoch.stage),
                           f"{name}_personal_train": epoch.f1_personal, f"{name}_deputy_train": epoch.f1_deputy,
                           "gamma": None if epoch.gamma is None else epoch.gamma.tolist()}
        self.epoch_log.append(dict(self.last_epoch))
        self.evaluate_epoch()

    def release_round_state(self) -> None:
        self.optimizers = {}  # re-created at the next round start (begin_epoch)

    def needs_train_predictions(self, info: StepInfo) -> bool:
        """Whether the stage check of the coming epoch runs P and D over the training split."""
        return not (info.first_of_round or self.stage is Stage.START or self.single_model) \
            and self.params.det_stage_estimate == "faithful"

    def round_info(self) -> Dict[str, Any]:
        """DET stage, losses, stage-check F1 (NaN when the stage was forced) and CPA prototype factor
        (None before ``t_init`` or without CPA) of each epoch; with ``prr_diagnostics``, the validation
        score (``f1``; segmentation: ``dice``) of P and D before and after the round's receive
        (``deputy_received`` False: nothing came, the last round; after = before)."""
        info: Dict[str, Any] = {"epochs": list(self.epoch_log)}
        b, self.boundary = self.boundary, {}
        if b:
            received = b["deputy_after"] is not None
            deputy_after = b["deputy_after"] if received else b["deputy_before"]
            name = self.task.score_name
            info.update({f"{name}_personal_valid_before_receive": b["personal_before"],
                         f"{name}_personal_valid_after_receive": deputy_after if self.single_model else b["personal_before"],
                         f"{name}_deputy_valid_before_receive": b["deputy_before"],
                         f"{name}_deputy_valid_after_receive": deputy_after, "deputy_received": received})
        return info

    def payload(self, info: StepInfo) -> Message:
        out: Message = {"prototypes": self.local_protos.clone(), "prototype_counts": self.local_proto_counts.clone(),
                        "stage": int(self.stage)}
        if info.last_of_round and not info.last_of_run:
            out["deputy"] = cpu_state(self.deputy)
        return out

    def reported_model(self) -> nn.Module:
        return self.personal

    def epoch_models(self) -> Dict[str, nn.Module]:
        """``prr_eval_every_epoch`` evaluates P_k and D_k (one model without DET: ``model``)."""
        return super().epoch_models() if self.single_model else {"personal": self.personal, "deputy": self.deputy}

    def _valid_score(self, model: nn.Module) -> float:
        """The task score of ``model`` on this client's validation split (the diagnosis)."""
        return self.task.score(model, self.valid_split, self.ctx.num_classes, self.ctx.eval_batch_size)

    # ----------------------------------------------------------------- DET and CPA
    def _stage_f1(self, train_predictions=None):
        """Training macro-F1 (segmentation: Dice) of (P, D) for the stage choice; NaN when the stage is forced.

        ``train_predictions``: optional ``(labels, predicted P, predicted D)`` on the training
        split in eval mode, computed elsewhere (the batched engine, classification only); None:
        computed here.
        """
        if self.stage is Stage.START or self.single_model:
            return float("nan"), float("nan")  # the first epoch of a round is always RECOVER
        if self.params.det_stage_estimate == "previous_epoch":
            return self.previous_trackers["personal"].score(), self.previous_trackers["deputy"].score()
        c, bs = self.ctx.num_classes, self.ctx.eval_batch_size
        if train_predictions is None:
            return (self.task.score(self.personal, self.train_split, c, bs),
                    self.task.score(self.deputy, self.train_split, c, bs))
        labels, pred_p, pred_d = train_predictions
        return macro_f1(labels, pred_p, c), macro_f1(labels, pred_d, c)

    def _prototype_gamma(self, round_idx: int) -> Optional[torch.Tensor]:
        """CPA phase 2 factor, or None during the first ``cpa_init_rounds`` rounds."""
        if round_idx < self.params.cpa_init_rounds or self.global_protos is None or not self.params.use_cpa:
            return None
        gamma = prototype_factor(self.local_protos, self.global_protos, self.params.cpa_tau,
                                 present=self.class_counts > 0)
        return to_device(gamma, self.ctx.device)

    def _seesaw(self) -> torch.Tensor:
        """The CPA mitigation matrix from the handshake's global class counts, on the device."""
        if self.global_class_counts is None:
            raise RuntimeError("PRR needs the global class counts of the handshake before training")
        beta = self.params.cpa_beta if self.params.use_cpa else 0.0  # beta 0: plain cross-entropy
        return to_device(seesaw_matrix(self.global_class_counts, beta), self.ctx.device)

    # ----------------------------------------------------------------- resume
    def extra_state(self) -> Dict[str, Any]:
        return {"local_protos": self.local_protos, "local_proto_counts": self.local_proto_counts,
                "global_protos": self.global_protos, "stage": int(self.stage), "epoch_log": list(self.epoch_log),
                "boundary": dict(self.boundary)}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        self.local_protos = state["local_protos"]
        self.local_proto_counts = state["local_proto_counts"]
        self.global_protos = state["global_protos"]
        self.stage = Stage(state["stage"])
        self.epoch_log = list(state["epoch_log"])
        self.boundary = dict(state.get("boundary", {}))  # absent from resume files of earlier versions


class PRREpoch:
    """One PRR client's local epoch in progress (:meth:`PRRClient.begin_epoch`): the per-batch losses
    of both models under the epoch's DET stage and CPA factor, and what the epoch accumulates
    (prototypes of P's features, P's and D's training predictions, mean losses).  The loop engine
    and the batched engine both train through it, so the two cannot differ."""

    def __init__(self, client: PRRClient, f1_personal: float, f1_deputy: float, gamma: Optional[torch.Tensor],
                 seesaw: torch.Tensor) -> None:
        self.client = client
        self.stage = client.stage
        self.f1_personal, self.f1_deputy = f1_personal, f1_deputy
        self.gamma, self.seesaw = gamma, seesaw
        device, classes = client.ctx.device, client.ctx.num_classes
        self.accumulator = PrototypeAccumulator(classes, client.feature_dim, device)
        self.trackers: Dict[str, ScoreTracker] = {name: client.task.score_tracker(classes)
                                                  for name in ("personal", "deputy")}
        self.loss_sums = torch.zeros(2, device=device)
        self.batches = 0

    def losses(self, z_p: torch.Tensor, z_d: torch.Tensor, y: torch.Tensor):
        """``(loss of P, loss of D, their sum to backpropagate)`` of one batch (spec section 2's table).

        Teachers are detached, so each loss reaches one model only.  ``use_det: false``: one model,
        ``z_d`` is ``z_p`` and the three are the same loss.
        """
        client, task, p = self.client, self.client.task, self.client.params
        if client.single_model:
            loss = task.loss(z_p, y, seesaw=self.seesaw, gamma=self.gamma)
            return loss, loss, loss
        loss_p, loss_d = stage_losses(
            self.stage, z_p, z_d, task.loss(z_p, y, seesaw=self.seesaw, gamma=self.gamma),
            task.loss(z_d, y, seesaw=self.seesaw, gamma=self.gamma), temperature=p.distill_temperature,
            weight=p.distill_weight, distillation=task.distillation)
        return loss_p, loss_d, loss_p + loss_d

    def record(self, z_p: torch.Tensor, f_p: torch.Tensor, z_d: torch.Tensor, y: torch.Tensor,
               loss_p: torch.Tensor, loss_d: torch.Tensor) -> None:
        """Accumulate one batch: P's features per class, both models' predictions and losses."""
        self.client.task.add_prototypes(self.accumulator, f_p, y)
        self.loss_sums += torch.stack([loss_p.detach(), loss_d.detach()])
        self.batches += 1
        self.trackers["personal"].add(z_p, y)
        self.trackers["deputy"].add(z_d, y)


class PRRServer(FederatedServer):
    """Global prototypes after every epoch; PFA of the deputies after every round.

    A silo absent from a round (not sampled, or dropped out) is left out of both; the deputy PFA
    made for it at the end of the last round it trained waits here until its next round start.
    """

    STEPS_PER_ROUND = -1
    MESSAGE_FIELDS = {"global_prototypes": optional(tensor), "deputy": state}

    def __init__(self, num_clients, schedule, params: PRRParams, seed) -> None:
        super().__init__(num_clients, schedule, params, seed)
        self.global_protos: Optional[torch.Tensor] = None
        self.deputies: Dict[int, Dict[str, torch.Tensor]] = {}
        self.last_ratio: Optional[float] = None

    def aggregate_step(self, info: StepInfo, uploads: Mapping[int, Message]) -> None:
        silos = sorted(uploads)
        protos = torch.stack([torch.as_tensor(uploads[s]["prototypes"]) for s in silos])
        counts = torch.stack([torch.as_tensor(uploads[s]["prototype_counts"]) for s in silos])
        self.global_protos = global_prototype(protos, counts, method=self.params.cpa_global_prototype,
                                              generator=self.generator)
        if info.first_of_round:  # the silos that train this round received their deputies at its start
            for silo in silos:
                self.deputies.pop(silo, None)
        if info.last_of_round and not info.last_of_run:
            p = self.params
            self.last_ratio = pfa_ratio(info.round_idx, self.schedule.rounds, p.pfa_ratio_start, p.pfa_ratio_end)
            weights = [uploads[s]["num_samples"] for s in silos] if p.pfa_sample_weighted else None
            states = [uploads[s]["deputy"] for s in silos]
            if p.aggregation == "pfa":
                mixed = progressive_fourier_aggregate(states, self.last_ratio, weights=weights,
                                                      share_phase=p.pfa_share_phase)
            else:  # "without PFA": plain average, BatchNorm kept local as PFA does
                roles = infer_tensor_roles(states[0])
                local = [k for k, role in roles.items() if role in (TensorRole.LOCAL, TensorRole.UNTOUCHED)]
                mixed = average_keeping_local(states, local, weights)
            self.deputies.update(zip(silos, mixed))

    def payload_for(self, silo: int, step: int) -> Message:
        """The global prototype; at a round start, the silo's PFA deputy if one waits for it (made at
        the end of the last round it trained, kept while it was absent)."""
        out: Message = {"global_prototypes": self.global_protos}
        if silo in self.deputies and (step - 1) % self.spr == 0:
            out["deputy"] = self.deputies[silo]
        return out

    def extra_state(self) -> Dict[str, Any]:
        return {"global_protos": self.global_protos, "deputies": self.deputies}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        self.global_protos = state["global_protos"]
        self.deputies = dict(state["deputies"])


# PRR and its ablations, as the paper reports them: the same client and server, one component switched
# off by its hyper-parameters' defaults (fedml_prr.config.algorithms).
for _name in ("PRR", "PRR-noPFA", "PRR-noDET", "PRR-noCPA", "PRR-amp"):
    register_algorithm(_name, client=PRRClient, server=PRRServer)
SPEC = get_algorithm("PRR")

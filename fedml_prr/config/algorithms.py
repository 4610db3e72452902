"""What the configuration knows of each algorithm: its hyper-parameters, task defaults and summary.

An algorithm is two halves: this declaration (importable without torch), and its client and
server classes, registered under the same name by its module in :mod:`fedml_prr.algorithms`
(:func:`~fedml_prr.algorithms.registry.register_algorithm` takes ``params``, ``summary`` and
``task_defaults`` from here).  Keeping the declarations torch-free lets the command line check
every key of a config - its name and its type - before torch is imported, so a config error
appears at once instead of after the heavy imports.

Each hyper-parameter dataclass is frozen; its fields are the ``prr_<field>`` YAML keys
(:func:`fedml_prr.config.loading.load_config`), each checked on construction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional

from ..registry import Registry


@dataclass(frozen=True)
class AlgorithmDeclaration:
    """The configuration's view of an algorithm.

    Attributes
    ----------
    params:
        Its frozen hyper-parameter dataclass (fields are the ``prr_<field>`` YAML keys).
    summary:
        One line for ``fedml-prr algorithms``.
    task_defaults:
        ``task name -> {prr_key: value}``: defaults of that task used for every key a config
        leaves unset (PRR's segmentation variant: ``t_init`` 1, ``tau`` 1, ...).
    """

    name: str
    params: type
    summary: str
    task_defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


DECLARED: Registry[AlgorithmDeclaration] = Registry("algorithm")
"""Every built-in algorithm's declaration, by name (case-insensitive)."""


def declare_algorithm(name: str, *, params: type, summary: str,
                      task_defaults: Optional[Mapping[str, Mapping[str, Any]]] = None) -> None:
    """Declare algorithm ``name`` (a duplicate is an error); its module registers its classes."""
    DECLARED.register(name)(AlgorithmDeclaration(name, params, summary, dict(task_defaults or {})))


def declared_params() -> Dict[str, type]:
    """Canonical name -> hyper-parameter dataclass of every declared algorithm."""
    return {name: DECLARED.get(name).params for name in DECLARED.names()}


# ------------------------------------------------------------------------------------------ PRR
STAGE_ESTIMATES = ("faithful", "previous_epoch")
GLOBAL_PROTOTYPES = ("gaussian", "mean")
AGGREGATIONS = ("pfa", "average")

#: Defaults of the segmentation variant (PRR_METHOD.md sections 2-3), applied by the config loader
#: to every key a segmentation run's YAML does not set (``task_defaults``): t_init 1, tau 1, mean
#: global prototype, distillation (softmax-map MSE) weighted by 10.
SEGMENTATION_DEFAULTS = {"prr_cpa_init_rounds": 1, "prr_cpa_tau": 1.0, "prr_cpa_global_prototype": "mean",
                         "prr_distill_weight": 10.0}
PRR_TASK_DEFAULTS = {"segmentation": SEGMENTATION_DEFAULTS}


@dataclass(frozen=True)
class PRRParams:
    """PRR hyper-parameters (YAML keys ``prr_<name>``); defaults = the reference code.

    Attributes
    ----------
    pfa_ratio_start, pfa_ratio_end:
        Shared low-frequency ratio grows linearly from start (round 0) towards end (round T).
    pfa_share_phase:
        Share phase as well as amplitude (TMI 2022); ``false`` = amplitude only (MICCAI 2021).
    pfa_sample_weighted:
        Weight the amplitude/phase averages by training-set size (reference: uniform).
    det_a1, det_a2:
        DET stage thresholds on ``F1_D / F1_P`` (segmentation: training Dice).
    det_stage_estimate:
        ``faithful``: macro-F1 of both models on the training split, eval mode, before each
        epoch (two extra passes); ``previous_epoch``: from the predictions gathered while
        training the previous epoch (no extra pass).
    distill_temperature, distill_weight:
        Temperature and weight of DET distillation (reference: KL, 1 and 1; segmentation: MSE of
        the softmax maps, weight 10).
    cpa_beta:
        Seesaw mitigation exponent.
    cpa_tau:
        Prototype factor ``gamma = (1 + tau) / (cos + tau)`` (3; segmentation 1: the features are
        non-negative, so ``cos >= 0``).
    cpa_init_rounds:
        Rounds of plain Seesaw loss before the prototype factor starts (``t_init``).
    cpa_global_prototype:
        ``gaussian`` (reference: mean + noise * max(std, 1), redrawn every epoch) or ``mean``.
    aggregation:
        ``pfa`` (the method) or ``average``: deputies plain sample-weighted averaged, BatchNorm
        still kept local (the "without PFA" ablation).
    use_det:
        ``false``: one model per client, trained with CPA, sent to and replaced by the server
        (the "without DET" ablation).
    use_cpa:
        ``false``: plain cross-entropy instead of the CPA loss (the "without CPA" ablation).
    diagnostics:
        Record, at every round boundary, the validation score of P and D before and after the
        receive (two extra evaluation passes of the deputy over the validation split per round;
        docs/algorithm.md, "Diagnosis").
    """

    pfa_ratio_start: float = 0.7
    pfa_ratio_end: float = 0.95
    pfa_share_phase: bool = True
    pfa_sample_weighted: bool = False
    det_a1: float = 0.7
    det_a2: float = 0.9
    det_stage_estimate: str = "faithful"
    distill_temperature: float = 1.0
    distill_weight: float = 1.0
    cpa_beta: float = 0.8
    cpa_tau: float = 3.0
    cpa_init_rounds: int = 15
    cpa_global_prototype: str = "gaussian"
    aggregation: str = "pfa"
    use_det: bool = True
    use_cpa: bool = True
    diagnostics: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.pfa_ratio_start <= 1 or not 0 <= self.pfa_ratio_end <= 1:
            raise ValueError("prr_pfa_ratio_start and prr_pfa_ratio_end must be in [0, 1]")
        if not 0 < self.det_a1 <= self.det_a2:
            raise ValueError(f"need 0 < prr_det_a1 <= prr_det_a2, got {self.det_a1}, {self.det_a2}")
        if self.det_stage_estimate not in STAGE_ESTIMATES:
            raise ValueError(f"prr_det_stage_estimate must be one of {STAGE_ESTIMATES}, got {self.det_stage_estimate!r}")
        if self.cpa_global_prototype not in GLOBAL_PROTOTYPES:
            raise ValueError(f"prr_cpa_global_prototype must be one of {GLOBAL_PROTOTYPES}, got {self.cpa_global_prototype!r}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"prr_aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}")
        if self.distill_temperature <= 0 or self.cpa_tau <= 0 or self.cpa_beta < 0 or self.cpa_init_rounds < 0:
            raise ValueError("need prr_distill_temperature > 0, prr_cpa_tau > 0, prr_cpa_beta >= 0, prr_cpa_init_rounds >= 0")


# Ablations, as the paper reports them: the same client and server, one component switched off.
@dataclass(frozen=True)
class PRRWithoutPFAParams(PRRParams):
    aggregation: str = "average"


@dataclass(frozen=True)
class PRRWithoutDETParams(PRRParams):
    use_det: bool = False


@dataclass(frozen=True)
class PRRWithoutCPAParams(PRRParams):
    use_cpa: bool = False


@dataclass(frozen=True)
class PRRAmplitudeOnlyParams(PRRParams):
    pfa_share_phase: bool = False


# ------------------------------------------------------------------------------------ baselines
@dataclass(frozen=True)
class FedAvgParams:
    """FedAvg has no hyper-parameters beyond the shared schedule."""


@dataclass(frozen=True)
class FedBNParams:
    """FedBN has no hyper-parameters beyond the shared schedule."""


@dataclass(frozen=True)
class FedPerParams:
    """FedPer has no hyper-parameters beyond the shared schedule."""


@dataclass(frozen=True)
class LocalParams:
    """Local-only has no hyper-parameters beyond the shared schedule."""


@dataclass(frozen=True)
class CentralizedParams:
    """Centralized has no hyper-parameters beyond the shared schedule."""


@dataclass(frozen=True)
class FedRoDParams:
    """FedRoD (linear personalized head) has no hyper-parameters beyond the shared schedule: both
    heads train with the round's learning rate (the reference code uses one learning rate)."""


def _at_least(name: str, value: float, low: float) -> None:
    if value < low:
        raise ValueError(f"prr_{name} must be >= {low}, got {value}")


@dataclass(frozen=True)
class FedProxParams:
    """``fedprox_mu`` (FedML's key, also ``prr_fedprox_mu``): proximal weight; the paper's
    experiments use mu in {0.001, 0.01, 0.1, 1}; 0.01 is FedML's default."""

    fedprox_mu: float = 0.01

    def __post_init__(self) -> None:
        _at_least("fedprox_mu", self.fedprox_mu, 0)


@dataclass(frozen=True)
class FedRepParams:
    """``prr_fedrep_head_epochs``: head-only epochs per round before the ``epochs`` body epochs
    (the FedRep paper and code: 10 head epochs, 1 body epoch)."""

    fedrep_head_epochs: int = 10

    def __post_init__(self) -> None:
        _at_least("fedrep_head_epochs", self.fedrep_head_epochs, 0)


@dataclass(frozen=True)
class DittoParams:
    """``prr_ditto_lambda``: pull of the personal model towards the global one (the paper picks
    lambda from {0.01, 0.1, 1, 2} per dataset; 0.1 here)."""

    ditto_lambda: float = 0.1

    def __post_init__(self) -> None:
        _at_least("ditto_lambda", self.ditto_lambda, 0)


@dataclass(frozen=True)
class FedLCParams:
    """``prr_fedlc_tau``: calibration strength (the paper's tau; 1.0 in its reference code)."""

    fedlc_tau: float = 1.0

    def __post_init__(self) -> None:
        _at_least("fedlc_tau", self.fedlc_tau, 0)


@dataclass(frozen=True)
class FedALAParams:
    """FedALA's keys (``prr_ala_*``); defaults from the paper (``s``, ``p``) and its code.

    Attributes
    ----------
    ala_eta:
        Learning rate of the weights ``W`` (the reference code's default 1.0).
    ala_rand_percent:
        ``s``: percentage of the client's training images ALA learns on (the paper: 80).
    ala_layers:
        ``p``: number of top layers aggregated element-wise (the paper: 1, the classifier).
    ala_threshold, ala_num_pre_loss:
        First-time convergence rule: population std of the last ``num_pre_loss`` epoch losses
        below ``threshold`` (the reference code's 0.1 and 10).
    ala_max_start_epochs:
        Upper bound on the first-time epochs (not in the reference code, which loops until
        convergence).
    """

    ala_eta: float = 1.0
    ala_rand_percent: float = 80.0
    ala_layers: int = 1
    ala_threshold: float = 0.1
    ala_num_pre_loss: int = 10
    ala_max_start_epochs: int = 100

    def __post_init__(self) -> None:
        if self.ala_eta <= 0:
            raise ValueError(f"prr_ala_eta must be > 0, got {self.ala_eta}")
        if not 0 < self.ala_rand_percent <= 100:
            raise ValueError(f"prr_ala_rand_percent must be in (0, 100], got {self.ala_rand_percent}")
        if self.ala_layers < 1:
            raise ValueError(f"prr_ala_layers must be >= 1, got {self.ala_layers}")
        if self.ala_threshold < 0 or self.ala_num_pre_loss < 1 or self.ala_max_start_epochs < 1:
            raise ValueError("prr_ala_threshold must be >= 0, prr_ala_num_pre_loss and prr_ala_max_start_epochs >= 1")


@dataclass(frozen=True)
class ScaffoldParams:
    """SCAFFOLD's keys (``prr_scaffold_*``).

    Attributes
    ----------
    scaffold_global_lr:
        ``eta_g``, the server's step on the averaged model update (the paper's experiments: 1).
    scaffold_sample_weighted:
        Weight clients by training-set size (as this project's FedAvg); ``false``: uniformly, as
        the paper.
    """

    scaffold_global_lr: float = 1.0
    scaffold_sample_weighted: bool = True

    def __post_init__(self) -> None:
        if self.scaffold_global_lr <= 0:
            raise ValueError(f"prr_scaffold_global_lr must be > 0, got {self.scaffold_global_lr}")


@dataclass(frozen=True)
class FedAvgFTParams:
    """``prr_fedavg_ft_epochs``: local fine-tuning epochs of a copy of the client's model before each
    evaluation (default 1, the whole-epoch budget nearest FLamby's 100 SGD steps at the PRR paper's
    client sizes; see :mod:`fedml_prr.algorithms.fedavg_ft`)."""

    fedavg_ft_epochs: int = 1

    def __post_init__(self) -> None:
        _at_least("fedavg_ft_epochs", self.fedavg_ft_epochs, 0)


# --------------------------------------------------------------------------------- declarations
for _name, _params, _summary, _defaults in [
    ("PRR", PRRParams, "DET + CPA on the clients, Progressive Fourier Aggregation on the server (Chen et al. 2022)",
     PRR_TASK_DEFAULTS),
    ("PRR-noPFA", PRRWithoutPFAParams, "PRR ablation: deputies plain-averaged instead of PFA (BN kept local)",
     PRR_TASK_DEFAULTS),
    ("PRR-noDET", PRRWithoutDETParams, "PRR ablation: one model per client, no deputy, no distillation",
     PRR_TASK_DEFAULTS),
    ("PRR-noCPA", PRRWithoutCPAParams, "PRR ablation: plain cross-entropy instead of the CPA loss", PRR_TASK_DEFAULTS),
    ("PRR-amp", PRRAmplitudeOnlyParams, "PRR with amplitude-only PFA (the MICCAI 2021 version)", PRR_TASK_DEFAULTS),
    ("FedAvg", FedAvgParams, "sample-weighted average of the clients' models (McMahan et al. 2017)", None),
    ("FedProx", FedProxParams, "FedAvg with a proximal term mu/2 ||w - w_global||^2 (Li et al. 2020)", None),
    ("FedBN", FedBNParams, "FedAvg with BatchNorm kept local (Li et al. 2021)", None),
    ("FedPer", FedPerParams, "shared body, personal classifier head (Arivazhagan et al. 2019)", None),
    ("FedRep", FedRepParams, "personal head then shared body, body averaged (Collins et al. 2021)", None),
    ("Ditto", DittoParams, "personal model regularised towards the FedAvg model (Li et al. 2021)", None),
    ("FedLC", FedLCParams, "FedAvg with label-count logit calibration (Zhang et al. 2022)", None),
    ("FedRoD", FedRoDParams, "balanced-softmax generic model + local personal head (Chen & Chao 2022)", None),
    ("FedALA", FedALAParams, "FedAvg with adaptive element-wise local aggregation (Zhang et al. 2023)", None),
    ("SCAFFOLD", ScaffoldParams, "control-variate corrected local SGD, option II (Karimireddy et al. 2020)", None),
    ("FedAvg-FT", FedAvgFTParams, "FedAvg's model fine-tuned locally before each evaluation (FLamby)", None),
    ("Local", LocalParams, "each client trains alone, no communication (lower reference)", None),
    ("Centralized", CentralizedParams, "one model on the pooled data (upper reference)", None),
]:
    declare_algorithm(_name, params=_params, summary=_summary, task_defaults=_defaults)

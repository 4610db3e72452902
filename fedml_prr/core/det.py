"""Deputy-Enhanced Transfer (DET), the client side of PRR.

Chen et al., IEEE TMI 2022, section III-C.  Each client keeps a personalized model P (never
sent) and a deputy D (the model exchanged with the server).  Before each local epoch a stage is
chosen from the two models' training macro-F1; the stage decides who distils into whom.
"""

from __future__ import annotations

import enum
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F


class Stage(enum.IntEnum):
    """DET stages; ``START`` is the value before the first epoch of a round."""

    START = 0
    RECOVER = 1  # the personalized model teaches the deputy
    EXCHANGE = 2  # mutual learning
    SUBLIMATE = 3  # the deputy teaches the personalized model


def select_stage(
    f1_personal: float,
    f1_deputy: float,
    previous_stage: int,
    a1: float = 0.7,
    a2: float = 0.9,
) -> Stage:
    """Stage of the coming local epoch (spec section 2).

    Parameters
    ----------
    f1_personal, f1_deputy:
        Macro-F1 of P and D on the client's training split.
    previous_stage:
        Stage of the previous epoch of this round; 0 at the first epoch of a round.
    a1, a2:
        Thresholds, ``0 < a1 <= a2``.

    Returns
    -------
    Stage
        RECOVER at a round's first epoch or when ``F1_D < a1 * F1_P``; otherwise EXCHANGE after
        RECOVER; after EXCHANGE or SUBLIMATE: SUBLIMATE when ``F1_D >= a2 * F1_P``, else
        EXCHANGE.  RECOVER never jumps straight to SUBLIMATE.
    """
    previous = Stage(previous_stage)
    if previous is Stage.START or f1_deputy < a1 * f1_personal:
        return Stage.RECOVER
    if previous is Stage.RECOVER:
        return Stage.EXCHANGE
    return Stage.SUBLIMATE if f1_deputy >= a2 * f1_personal else Stage.EXCHANGE


def kl_distillation(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``KL(teacher || student)`` with a detached teacher, ``reduction='batchmean'``.

    ``kl_div(log_softmax(z_s / T), softmax(z_t.detach() / T))`` as in the reference (no T^2
    factor).  The teacher never receives a gradient.
    """
    return F.kl_div(
        F.log_softmax(student_logits / temperature, dim=1),
        F.softmax(teacher_logits.detach() / temperature, dim=1),
        reduction="batchmean",
    )


def stage_losses(
    stage: Stage,
    personal_logits: torch.Tensor,
    deputy_logits: torch.Tensor,
    personal_task_loss: torch.Tensor,
    deputy_task_loss: torch.Tensor,
    *,
    temperature: float = 1.0,
    weight: float = 1.0,
    distillation: Optional[Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Losses of (P, D) for one batch under ``stage`` (table of spec section 2).

    ``distillation(student, teacher, temperature)`` defaults to :func:`kl_distillation`; the
    segmentation variant passes the softmax-map MSE (``weight`` 10).

    =========== ======================= =======================
    stage       loss of P               loss of D
    =========== ======================= =======================
    RECOVER     task(P)                 task(D) + w KL(D <- P)
    EXCHANGE    task(P) + w KL(P <- D)  task(D) + w KL(D <- P)
    SUBLIMATE   task(P) + w KL(P <- D)  task(D)
    =========== ======================= =======================
    """
    stage = Stage(stage)
    if stage is Stage.START:
        raise ValueError("select a stage before training (Stage.START is not a training stage)")
    distill = kl_distillation if distillation is None else distillation
    loss_p, loss_d = personal_task_loss, deputy_task_loss
    if stage in (Stage.EXCHANGE, Stage.SUBLIMATE):
        loss_p = loss_p + weight * distill(personal_logits, deputy_logits, temperature)
    if stage in (Stage.RECOVER, Stage.EXCHANGE):
        loss_d = loss_d + weight * distill(deputy_logits, personal_logits, temperature)
    return loss_p, loss_d

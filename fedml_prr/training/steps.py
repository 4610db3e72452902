"""Where a protocol step falls: the arithmetic of steps, algorithm rounds and sub-steps.

A run has ``1 + T*S`` steps: the handshake (step 0), then ``S`` steps per algorithm round
(:func:`steps_per_round`); step ``num_steps`` is the final delivery
(:mod:`fedml_prr.training.federated`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..config import TrainSchedule


@dataclass(frozen=True)
class StepInfo:
    """Where a training step falls: algorithm round ``round_idx``, sub-step ``sub_step``."""

    step: int
    round_idx: int
    sub_step: int
    steps_per_round: int
    total_rounds: int

    @property
    def first_of_round(self) -> bool:
        return self.sub_step == 0

    @property
    def last_of_round(self) -> bool:
        return self.sub_step == self.steps_per_round - 1

    @property
    def last_of_run(self) -> bool:
        return self.last_of_round and self.round_idx == self.total_rounds - 1


def steps_per_round(algorithm_steps: int, schedule: TrainSchedule) -> int:
    return schedule.epochs if algorithm_steps == -1 else algorithm_steps


def total_steps(spr: int, schedule: TrainSchedule) -> int:
    """Number of FedML communication rounds of a run: handshake + training steps."""
    return 1 + schedule.rounds * spr


def step_info(step: int, spr: int, schedule: TrainSchedule) -> StepInfo:
    if not 1 <= step < total_steps(spr, schedule):
        raise ValueError(f"step {step} is not a training step (1..{total_steps(spr, schedule) - 1})")
    round_idx, sub = divmod(step - 1, spr)
    return StepInfo(step, round_idx, sub, spr, schedule.rounds)


def round_closed_by(step: int, spr: int) -> Optional[int]:
    """The algorithm round whose server message is delivered at ``step`` (None if none)."""
    if step < 2 or (step - 1) % spr != 0:
        return None
    return (step - 2) // spr

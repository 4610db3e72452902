"""DET stage machine and distillation (spec section 2)."""

import pytest
import torch

from fedml_prr.core.det import Stage, kl_distillation, select_stage, stage_losses


@pytest.mark.parametrize("prev", [0])
def test_first_epoch_is_always_recover(prev):
    assert select_stage(0.5, 0.99, prev) is Stage.RECOVER


def test_transitions():
    # RECOVER stays while the deputy is weak, moves to EXCHANGE, never straight to SUBLIMATE
    assert select_stage(0.8, 0.5, 1) is Stage.RECOVER
    assert select_stage(0.8, 0.79, 1) is Stage.EXCHANGE
    assert select_stage(0.8, 0.95, 1) is Stage.EXCHANGE
    # EXCHANGE -> SUBLIMATE once F1_D >= a2 * F1_P, stays EXCHANGE between a1 and a2
    assert select_stage(0.8, 0.73, 2) is Stage.SUBLIMATE
    assert select_stage(0.8, 0.70, 2) is Stage.EXCHANGE
    assert select_stage(0.8, 0.80, 3) is Stage.SUBLIMATE
    assert select_stage(0.8, 0.60, 3) is Stage.EXCHANGE
    # a deputy that collapses below a1 sends any stage back to RECOVER
    assert select_stage(0.8, 0.50, 3) is Stage.RECOVER
    assert select_stage(0.8, 0.50, 2) is Stage.RECOVER
    # thresholds are parameters
    assert select_stage(0.8, 0.50, 1, a1=0.5, a2=0.6) is Stage.EXCHANGE


def test_teacher_gets_no_gradient():
    student = torch.randn(5, 3, requires_grad=True)
    teacher = torch.randn(5, 3, requires_grad=True)
    kl_distillation(student, teacher).backward()
    assert teacher.grad is None and student.grad is not None and student.grad.abs().sum() > 0


def test_kl_zero_for_equal_logits_and_positive_otherwise():
    z = torch.randn(4, 3)
    assert kl_distillation(z, z.clone()).item() == pytest.approx(0.0, abs=1e-6)
    assert kl_distillation(z, torch.randn(4, 3)).item() > 0


@pytest.mark.parametrize("stage,p_distils,d_distils", [(1, False, True), (2, True, True), (3, True, False)])
def test_stage_losses_route_gradients(stage, p_distils, d_distils):
    zp = torch.randn(6, 3, requires_grad=True)
    zd = torch.randn(6, 3, requires_grad=True)
    zero = torch.zeros(())
    loss_p, loss_d = stage_losses(Stage(stage), zp, zd, zero, zero)
    assert (loss_p.item() > 0) == p_distils and (loss_d.item() > 0) == d_distils
    if p_distils:
        (gp,) = torch.autograd.grad(loss_p, zp, retain_graph=True)
        assert gp.abs().sum() > 0
        assert torch.autograd.grad(loss_p, zd, allow_unused=True)[0] is None
    if d_distils:
        assert torch.autograd.grad(loss_d, zp, allow_unused=True)[0] is None


def test_start_is_not_a_training_stage():
    with pytest.raises(ValueError):
        stage_losses(Stage.START, torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(()), torch.zeros(()))

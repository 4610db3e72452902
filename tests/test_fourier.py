"""Invariants of Progressive Fourier Aggregation (spec section 1)."""

import math

import pytest
import torch
from torch import nn

import pfa_reference
from fedml_prr.core.fourier import (
    TensorRole,
    fourier_mix,
    infer_tensor_roles,
    pfa_ratio,
    progressive_fourier_aggregate,
)


def small_net():
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 4, 6), nn.Linear(6, 3, bias=False))


def client_states(k, seed=0):
    out = []
    for i in range(k):
        torch.manual_seed(seed + i)
        net = small_net()
        net[1].running_mean.add_(torch.randn(4))
        net[1].num_batches_tracked.fill_(10 + i)
        out.append({n: t.clone() for n, t in net.state_dict().items()})
    return out


@pytest.mark.parametrize("dims,shape", [(2, (3, 6, 10)), (2, (4, 5, 7)), (1, (3, 4, 9)), (1, (2, 8))])
def test_identical_clients_get_their_matrix_back(dims, shape):
    one = torch.randn(shape[1:])
    stacked = one.expand(shape).clone()
    out = fourier_mix(stacked, 0.8, dims=dims)
    assert out.shape == stacked.shape and out.dtype == stacked.dtype
    assert torch.allclose(out, stacked, atol=1e-5)


@pytest.mark.parametrize("share_phase", [True, False])
def test_ratio_zero_shares_nothing(share_phase):
    stacked = torch.randn(4, 6, 8)
    assert torch.allclose(fourier_mix(stacked, 0.0, share_phase=share_phase), stacked, atol=1e-5)


def test_box_replaces_amplitude_and_phase_inside_only():
    stacked = torch.randn(3, 8, 8, dtype=torch.float64)
    out = fourier_mix(stacked, 0.5, dims=2)
    f_in = torch.fft.fftshift(torch.fft.fft2(stacked), dim=(-2, -1))
    f_out = torch.fft.fftshift(torch.fft.fft2(out), dim=(-2, -1))
    # box for h = w = 8, r = 0.5: b = 2, c = 4 -> rows/cols [2, 6).  Inside it, coefficients
    # whose conjugate partner is also inside come back as the clients' mean amplitude and phase
    # (the DC term is self-conjugate: its averaged phase is cut by the real part, by design)
    for row, col in [(3, 3), (3, 4), (4, 3), (5, 3)]:
        expected = torch.polar(f_in.abs()[:, row, col].mean(), f_in.angle()[:, row, col].mean())
        assert torch.allclose(f_out[:, row, col], expected.expand(3), atol=1e-8)
    # outside the box (and away from the box's mirror edge) each client keeps its own spectrum
    for row, col in [(0, 0), (1, 5), (7, 2)]:
        assert torch.allclose(f_out[:, row, col], f_in[:, row, col], atol=1e-8)


def test_amplitude_only_keeps_each_clients_phase_in_box():
    stacked = torch.randn(2, 8, 8, dtype=torch.float64)
    shared = fourier_mix(stacked, 0.5, share_phase=True)
    amp_only = fourier_mix(stacked, 0.5, share_phase=False)
    assert not torch.allclose(shared, amp_only)
    f_in = torch.fft.fftshift(torch.fft.fft2(stacked), dim=(-2, -1))
    f_out = torch.fft.fftshift(torch.fft.fft2(amp_only), dim=(-2, -1))
    inside = (slice(None), slice(3, 5), slice(3, 5))
    assert torch.allclose(torch.cos(f_out.angle()[inside]), torch.cos(f_in.angle()[inside]), atol=1e-6)


def test_full_band_is_not_fedavg():
    stacked = torch.randn(3, 6, 6)
    out = fourier_mix(stacked, 1.0)
    assert not torch.allclose(out[0], stacked.mean(0), atol=1e-3)


def test_weights_change_the_average_and_validate():
    stacked = torch.randn(3, 6, 6)
    uniform = fourier_mix(stacked, 0.9)
    heavy = fourier_mix(stacked, 0.9, weights=[100.0, 1.0, 1.0])
    assert not torch.allclose(uniform, heavy)
    with pytest.raises(ValueError, match="weights"):
        fourier_mix(stacked, 0.9, weights=[1.0, -1.0, 1.0])


def test_pfa_ratio_schedule():
    assert pfa_ratio(0, 50) == pytest.approx(0.7)
    assert pfa_ratio(25, 50) == pytest.approx(0.825)
    assert pfa_ratio(49, 50) == pytest.approx(0.7 + 0.98 * 0.25)
    with pytest.raises(ValueError):
        pfa_ratio(0, 0)


def test_roles_of_a_network():
    roles = infer_tensor_roles(client_states(1)[0])
    assert roles["0.weight"] is TensorRole.CONV
    assert roles["1.weight"] is roles["1.bias"] is roles["1.running_var"] is TensorRole.LOCAL
    assert roles["1.num_batches_tracked"] is TensorRole.LOCAL
    assert roles["4.weight"] is TensorRole.LINEAR and roles["4.bias"] is TensorRole.AVERAGE
    assert roles["5.weight"] is TensorRole.CLASSIFIER
    with pytest.raises(KeyError, match="classifier_key"):
        infer_tensor_roles(client_states(1)[0], classifier_key="nope.weight")


def test_aggregate_rules_per_tensor():
    states = client_states(3)
    snapshot = [{k: v.clone() for k, v in s.items()} for s in states]
    out = progressive_fourier_aggregate(states, 0.8)
    assert len(out) == 3
    for before, after in zip(states, snapshot):  # inputs not mutated
        assert all(torch.equal(before[k], after[k]) for k in before)
    for k, (s, o) in enumerate(zip(states, out)):
        assert o.keys() == s.keys()
        for key in ("1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked"):
            assert torch.equal(o[key], s[key])  # BatchNorm stays local, integer buffers untouched
        assert all(o[key].dtype == s[key].dtype and o[key].shape == s[key].shape for key in s)
        assert torch.allclose(o["4.bias"], torch.stack([x["4.bias"] for x in states]).mean(0), atol=1e-6)
        assert not torch.allclose(o["0.weight"], s["0.weight"])  # conv weights are mixed
    # personalised: clients get different conv weights back
    assert not torch.allclose(out[0]["0.weight"], out[1]["0.weight"])


def test_aggregate_conv_uses_the_reference_matrix_view():
    states = client_states(2)
    out = progressive_fourier_aggregate(states, 0.8)
    w = torch.stack([s["0.weight"] for s in states])  # [K, N_out, C_in, kh, kw]
    k, n_out, c_in, kh, kw = w.shape
    matrix = w.permute(0, 2, 3, 4, 1).reshape(k, c_in * kh, kw * n_out)
    expected = fourier_mix(matrix, 0.8).reshape(k, c_in, kh, kw, n_out).permute(0, 4, 1, 2, 3)
    assert torch.allclose(out[0]["0.weight"], expected[0], atol=1e-6)
    classifier = torch.stack([s["5.weight"] for s in states])
    assert torch.allclose(out[1]["5.weight"], fourier_mix(classifier, 0.8, dims=1)[1], atol=1e-6)


def test_aggregate_identical_clients_is_identity_and_ratio_zero_keeps_all():
    state = client_states(1)[0]
    out = progressive_fourier_aggregate([state, state, state], 0.9)
    assert all(torch.allclose(o[k], state[k], atol=1e-5) for o in out for k in state)
    states = client_states(3)
    zero = progressive_fourier_aggregate(states, 0.0)
    for s, o in zip(states, zero):
        assert all(torch.allclose(o[k], s[k], atol=1e-5) for k in s if k != "4.bias")


def test_mismatched_states_are_rejected():
    a, b = client_states(2)
    b = dict(b)
    b.pop("4.bias")
    with pytest.raises(ValueError, match="different keys"):
        progressive_fourier_aggregate([a, b], 0.8)


@pytest.mark.parametrize("h,w,ratio", [(7, 9, 0.5), (6, 5, 0.7), (8, 8, 0.95), (5, 6, 1.0)])
def test_shared_band_is_the_spec_box_on_odd_and_even_sizes(h, w, ratio):
    # client 0 is all zeros; client 1 is one real cosine whose two conjugate coefficients sit at
    # shifted positions (i, j) and its mirror.  Client 0 receives energy iff the box holds them.
    def box(n):  # spec section 1, step 3, on the fftshift-ed axis
        b, c = math.floor(n * ratio / 2), n // 2
        return set(range(max(c - b, 0), min(c + b, n)))

    rows, cols = box(h), box(w)
    for i in range(h):
        for j in range(w):
            fr, fc = i - h // 2, j - w // 2  # frequency of shifted position (i, j)
            mi, mj = (-fr) % h, (-fc) % w
            mirror = ((mi + h // 2) % h, (mj + w // 2) % w)
            yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
            wave = torch.cos(2 * math.pi * (fr * yy / h + fc * xx / w)).double() + 0.3
            stacked = torch.stack([torch.zeros(h, w, dtype=torch.float64), wave])
            out0 = fourier_mix(stacked, ratio)[0]
            spectrum0 = torch.fft.fftshift(torch.fft.fft2(out0))
            inside = i in rows and j in cols
            mirror_inside = mirror[0] in rows and mirror[1] in cols
            if inside or mirror_inside:
                assert spectrum0[i, j].abs() > 1e-6 or spectrum0[mirror].abs() > 1e-6
            else:
                assert spectrum0[i, j].abs() < 1e-9 and spectrum0[mirror].abs() < 1e-9


@pytest.mark.parametrize("name", ["vgg16_slim", "resnet18"])
def test_roles_of_every_registered_model(name):
    from fedml_prr.models import MODELS, build_model

    assert name in MODELS
    model = build_model(name, num_classes=3)
    roles = infer_tensor_roles(model.state_dict())
    assert roles[model.classifier_key] is TensorRole.CLASSIFIER
    bn_keys = {f"{m_name}.{p}" for m_name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
               for p, _ in list(m.named_parameters(recurse=False)) + list(m.named_buffers(recurse=False))}
    assert bn_keys and all(roles[k] is TensorRole.LOCAL for k in bn_keys)
    assert all(roles[k] is TensorRole.CONV for k, v in model.state_dict().items() if v.dim() == 4)


# --------------------------------------------------------------------------- the half-spectrum PFA
@pytest.mark.parametrize("share_phase", [True, False])
@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.33, 0.7, 0.95, 0.99])
def test_half_spectrum_pfa_matches_the_full_spectrum_rule_it_replaced(share_phase, ratio):
    # ratio >= 1 shares the Nyquist frequency of even axes: a real coefficient whose phase, pi or -pi,
    # the full-spectrum rule took from the sign of a rounding zero; the half-spectrum one says pi
    gen = torch.Generator().manual_seed(int(ratio * 100) + share_phase)
    state = {  # odd and even axes, a conv, a linear, a classifier, BatchNorm, a bias, an integer buffer
        "conv.weight": None, "bn.weight": None, "bn.bias": None, "bn.running_mean": None, "bn.running_var": None,
        "bn.num_batches_tracked": None, "fc1.weight": None, "fc1.bias": None, "fc2.weight": None,
    }
    shapes = {"conv.weight": (6, 5, 3, 3), "bn.weight": (6,), "bn.bias": (6,), "bn.running_mean": (6,),
              "bn.running_var": (6,), "fc1.weight": (9, 7), "fc1.bias": (9,), "fc2.weight": (4, 9)}
    states = []
    for _ in range(5):
        s = {k: torch.randn(shapes[k], generator=gen) for k in state if k in shapes}
        s["bn.num_batches_tracked"] = torch.tensor(3)
        states.append({k: s[k] for k in state})
    weights = [1.0, 2.0, 3.0, 4.0, 5.0]
    new = progressive_fourier_aggregate(states, ratio, share_phase=share_phase, weights=weights)
    old = pfa_reference.progressive_fourier_aggregate(states, ratio, share_phase=share_phase, weights=weights)
    for k in range(5):
        for key in state:
            assert new[k][key].dtype == old[k][key].dtype
            assert torch.allclose(new[k][key], old[k][key], atol=1e-5, rtol=1e-5), (k, key)


def test_half_spectrum_pfa_matches_on_a_real_network_in_float64():
    from fedml_prr.models import build_model
    states = []
    for i in range(4):
        torch.manual_seed(i)
        states.append({k: v.double() if v.is_floating_point() else v
                       for k, v in build_model("vgg16_slim", num_classes=3, width=0.25).state_dict().items()})
    new = progressive_fourier_aggregate(states, 0.8)
    old = pfa_reference.progressive_fourier_aggregate(states, 0.8)
    worst = max((new[k][key] - old[k][key]).abs().max().item() for k in range(4) for key in new[k])
    # float64 rounding, amplified only by the phase of near-zero coefficients (ill-conditioned in both)
    assert worst < 1e-8

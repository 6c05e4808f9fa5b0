"""The ADM U-Net: parameter counts against ADM's code, FLOPs, shapes of every preset, and layers
against closed forms / reference computations."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from cfgdiff.config import TRAIN_PRESETS, ModelConfig
from cfgdiff.errors import ConfigError
from cfgdiff.nn import build_unet, count_params, forward_flops
from cfgdiff.nn.layers import Attention, sinusoidal_embedding

ADM64 = TRAIN_PRESETS["adm64"].model


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_adm64_parameter_count_matches_adm():
    # A replica of guided-diffusion's UNetModel: 295.90M with a 1000-row label table and 6 outputs,
    # 295.13M without the table and with 3 outputs (REFERENCE.md). Ours: 1001 rows (∅), 3 outputs.
    n = count_params(build_unet(ADM64, "meta"))
    assert abs(n - 295.9e6) / 295.9e6 < 1e-3
    assert n == 295_900_035
    bare = count_params(build_unet(dataclasses.replace(ADM64, num_classes=0), "meta"))
    assert bare == 295_131_267
    assert n - bare == 1001 * 768  # the label table: K + 1 rows of the 4·192 embedding


def test_adm64_forward_flops():
    # ≈ 109.7 GMAC ≈ 219 GFLOP per forward at 64² (REFERENCE.md)
    assert forward_flops(ADM64) == pytest.approx(219.3e9, rel=2e-3)


def test_small_presets_sizes():
    assert 30e6 < count_params(build_unet(TRAIN_PRESETS["cifar32"].model, "meta")) < 40e6
    assert count_params(build_unet(TRAIN_PRESETS["tiny"].model, "meta")) <= 2_000_000


def test_adm64_shapes_on_meta():
    net = build_unet(ADM64, "meta")
    out = net(torch.empty(2, 3, 64, 64, device="meta"), torch.empty(2, device="meta"),
              torch.zeros(2, dtype=torch.long, device="meta"))
    assert out.shape == (2, 3, 64, 64)


@pytest.mark.parametrize("preset", ["cifar32", "tiny"])
def test_forward_of_small_presets(preset):
    cfg = TRAIN_PRESETS[preset].model
    torch.manual_seed(0)
    net = build_unet(cfg).eval()
    s = cfg.resolution
    with torch.no_grad():
        out = net(torch.randn(2, 3, s, s), torch.tensor([0.0, 999.0]), torch.tensor([0, cfg.num_classes]))
    assert out.shape == (2, 3, s, s)
    assert torch.equal(out, torch.zeros_like(out))  # every residual branch and the output start at 0


def test_labels_and_null_label_condition_the_output():
    cfg = TRAIN_PRESETS["tiny"].model
    torch.manual_seed(0)
    net = build_unet(cfg).eval()
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():  # the zero-initialised layers: give them weights, as training would
                p.normal_(std=0.05)
        x = torch.randn(1, 3, 32, 32).expand(3, -1, -1, -1)
        out = net(x, torch.full((3,), 500.0), torch.tensor([0, 1, cfg.num_classes]))  # class 0, 1, ∅
    assert torch.isfinite(out).all()
    assert (out[0] - out[1]).abs().max() > 1e-3 and (out[0] - out[2]).abs().max() > 1e-3


def test_sinusoidal_embedding_closed_form():
    t = torch.tensor([0.0, 1.0, 250.0])
    e = sinusoidal_embedding(t, 8, max_period=10000.0)
    freqs = [10000.0 ** (-k / 4) for k in range(4)]
    expected = [[math.cos(ti * f) for f in freqs] + [math.sin(ti * f) for f in freqs] for ti in t.tolist()]
    torch.testing.assert_close(e, torch.tensor(expected), rtol=1e-5, atol=1e-5)


def test_attention_matches_explicit_softmax():
    torch.manual_seed(1)
    layer = Attention(64, head_channels=32).double()
    torch.nn.init.normal_(layer.proj.weight, std=0.2)
    x = torch.randn(2, 64, 4, 4, dtype=torch.float64)
    # reference: q, k, v split first, then 2 heads of 32; softmax(q·kᵀ/√32)·v; residual
    h = layer.norm(x).flatten(2)  # (B, C, L)
    qkv = torch.einsum("oc,bcl->bol", layer.qkv.weight, h) + layer.qkv.bias[:, None]  # 1×1 conv, (B, 3C, L)
    q, k, v = (t.reshape(2, 2, 32, 16) for t in qkv.chunk(3, dim=1))  # (B, heads, d, L)
    w = torch.softmax(torch.einsum("bhdi,bhdj->bhij", q, k) / math.sqrt(32), dim=-1)
    a = torch.einsum("bhij,bhdj->bhdi", w, v).reshape(2, 64, 16)
    out = torch.einsum("oc,bcl->bol", layer.proj.weight, a) + layer.proj.bias[:, None]
    torch.testing.assert_close(layer(x), x + out.reshape(2, 64, 4, 4), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    "change, message",
    [({"model_channels": 48}, "multiples of norm_groups"), ({"head_channels": 40}, "head_channels"),
     ({"resolution": 30}, "divisible"), ({"dropout": 1.5}, "dropout"), ({"num_classes": -1}, "num_classes")],
)
def test_model_config_rejects_bad_values(change, message):
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(ModelConfig(), **change)


@pytest.mark.parametrize("preset", sorted(TRAIN_PRESETS))
def test_no_preset_normalises_single_channels(preset):
    """A GroupNorm group of one channel is instance norm: it erases each channel's per-image mean
    before the output convolution, so the network cannot output ε's image mean (docs/train.md).
    Every preset keeps at least 4 channels a group (cifar32's 128/32; ADM's narrowest is 192/32)."""
    m = TRAIN_PRESETS[preset].model
    assert min(m.model_channels * k for k in m.channel_mult) // m.norm_groups >= 4


def test_a_w_conditioned_student_starts_as_its_teacher_and_then_depends_on_w():
    import dataclasses

    import torch

    from cfgdiff.config import ModelConfig
    from cfgdiff.nn import build_unet
    from cfgdiff.nn.unet import W_SCALE

    cfg = ModelConfig(resolution=8, model_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                      attention_resolutions=(4,), head_channels=16, num_classes=3, norm_groups=8, dropout=0.0)
    torch.manual_seed(0)
    teacher = build_unet(cfg).eval()
    with torch.no_grad():  # every zero-initialised layer made non-zero, like a trained net's
        for p in teacher.parameters():
            if not p.any():
                p.normal_(std=0.1)
    student = build_unet(dataclasses.replace(cfg, w_embedding=True)).eval()
    missing, unexpected = student.load_state_dict(teacher.state_dict(), strict=False)
    assert unexpected == [] and missing and all(k.startswith("w_mlp.") for k in missing)
    x, c, y = torch.randn(4, 3, 8, 8), torch.tensor([10.0, 200.0, 500.0, 900.0]), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        base = teacher(x, c, y)
        for w in (0.0, 1.0, 7.5):  # the zero-initialised last layer: the student is its teacher at every w
            assert torch.equal(student(x, c, y, torch.full((4,), w)), base)
        torch.nn.init.normal_(student.w_mlp[2].weight, std=0.1)
        a, b = student(x, c, y, torch.full((4,), 0.5)), student(x, c, y, torch.full((4,), 2.0))
        assert not torch.allclose(a, b)  # once trained, w changes the output
        # w enters as the noise level does: W_SCALE·w through the same sinusoidal features
        emb = student.w_mlp(sinusoidal_embedding(W_SCALE * torch.tensor([0.5]), 16))
        assert emb.shape == (1, 16 * cfg.emb_mult)
    with pytest.raises(ValueError, match="pass w"):
        student(x, c, y)
    with pytest.raises(ValueError, match="does not take w"):
        teacher(x, c, y, torch.ones(4))


def test_train_refuses_a_w_conditioned_network():
    from cfgdiff.config import TrainConfig

    with pytest.raises(ConfigError, match="model.w_embedding makes a guided-distillation student"):
        dataclasses.replace(TRAIN_PRESETS["tiny"], model=dataclasses.replace(TRAIN_PRESETS["tiny"].model,
                                                                             w_embedding=True))
    assert isinstance(TRAIN_PRESETS["tiny"], TrainConfig) and not TRAIN_PRESETS["tiny"].model.w_embedding

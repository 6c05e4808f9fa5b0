"""Device choices that only matter on a GPU, pinned on the CPU: where bf16 autocast is used, and the
metrics' float32 guard against TF32 that training leaves switched on for its process."""

import pytest
import torch

from cfgdiff import dist
from cfgdiff.metrics.detector import full_fp32


@pytest.mark.parametrize("capability,native", [((7, 0), False), ((7, 5), False), ((8, 0), True), ((9, 0), True)])
def test_bf16_autocast_only_on_gpus_with_bf16_tensor_cores(monkeypatch, capability, native):
    """A V100 (7.0) or T4 (7.5) only emulates bf16: training and sampling must stay in float32 there."""
    asked = []
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: asked.append(d) or capability)
    device = torch.device("cuda", 1)
    assert dist.native_bf16(device) is native
    assert asked == [device]  # this rank's GPU, not the current one


def test_metrics_turn_tf32_off_inside_and_restore_it_after():
    before = torch.get_float32_matmul_precision()
    try:
        torch.backends.cuda.matmul.allow_tf32 = True  # what cfgdiff.train.step.setup_model does on CUDA
        with full_fp32():
            assert torch.get_float32_matmul_precision() == "highest"
            assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.set_float32_matmul_precision(before)


@pytest.mark.parametrize("local, visible, index", [(0, 8, 0), (5, 8, 5), (3, 1, 0), (5, 4, 1)])
def test_each_local_rank_gets_a_visible_gpu(local, visible, index):
    """torchrun shows every GPU (rank k uses GPU k); SLURM-style launchers may show one per process."""
    assert dist.cuda_index(local, visible) == index

"""Device choices that only matter on a GPU, pinned on the CPU: where bf16 autocast is used."""

import pytest
import torch

from cfgdiff import dist


@pytest.mark.parametrize("capability,native", [((7, 0), False), ((7, 5), False), ((8, 0), True), ((9, 0), True)])
def test_bf16_autocast_only_on_gpus_with_bf16_tensor_cores(monkeypatch, capability, native):
    """A V100 (7.0) or T4 (7.5) only emulates bf16: training and sampling must stay in float32 there."""
    asked = []
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: asked.append(d) or capability)
    device = torch.device("cuda", 1)
    assert dist.native_bf16(device) is native
    assert asked == [device]  # this rank's GPU, not the current one


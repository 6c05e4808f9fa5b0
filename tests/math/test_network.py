"""cfgdiff.diffusion.network: the network's noise condition and the ε-predictor wrapper.

The oracle for c_noise is the paper's own map (Sec. 2): λ = −2 log tan(a·u + b) with
b = arctan(e^{−λ_max/2}), a = arctan(e^{−λ_min/2}) − b, re-derived here with `math` only. cfgdiff
feeds c_noise = 1000·u(λ), so λ built from u must come back as 1000·u.
"""

import math

import pytest
import torch

from cfgdiff.config import DiffusionConfig
from cfgdiff.diffusion.network import network_eps, noise_condition


def paper_lambda(u: float, lam_min: float, lam_max: float) -> float:
    b = math.atan(math.exp(-lam_max / 2))
    a = math.atan(math.exp(-lam_min / 2)) - b
    return -2 * math.log(math.tan(a * u + b))


@pytest.mark.parametrize("lam_min,lam_max", [(-20.0, 20.0), (-15.0, 12.0)])
def test_noise_condition_is_1000_u_of_the_papers_map(lam_min, lam_max):
    diffusion = DiffusionConfig(lam_min=lam_min, lam_max=lam_max)
    us = [0.0, 0.01, 0.25, 0.5, 0.8, 0.999, 1.0]
    lam = torch.tensor([paper_lambda(u, lam_min, lam_max) for u in us], dtype=torch.float64)
    c = noise_condition(lam, diffusion)
    assert c.dtype == torch.float64
    assert c.tolist() == pytest.approx([1000 * u for u in us], abs=1e-9)
    # the ends: λ_max (clean) is 0, λ_min (pure noise) is 1000
    ends = noise_condition(torch.tensor([lam_max, lam_min]), diffusion)
    assert ends.tolist() == pytest.approx([0.0, 1000.0], abs=1e-6)


class Recorder(torch.nn.Module):
    """A real module (one parameter, so it has a dtype) that records what it was given."""

    def __init__(self, dtype: torch.dtype):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(2.0, dtype=dtype))
        self.seen: dict = {}

    def forward(self, x, c_noise, labels):
        self.seen = {"x": x, "c_noise": c_noise, "labels": labels,
                     "autocast": torch.is_autocast_enabled("cpu"), "autocast_dtype": torch.get_autocast_dtype("cpu")}
        return self.scale * x + c_noise[:, None, None, None] / 1000


def test_network_eps_feeds_the_network_and_returns_in_zs_dtype():
    diffusion = DiffusionConfig(lam_min=-15.0, lam_max=12.0)
    net = Recorder(torch.float32)
    z = torch.randn(3, 1, 2, 2, dtype=torch.float64)
    lam = torch.tensor([paper_lambda(u, -15.0, 12.0) for u in (0.1, 0.5, 0.9)], dtype=torch.float64)
    labels = torch.tensor([2, 0, 5])
    out = network_eps(net, diffusion)(z, lam, labels)
    seen = net.seen
    assert seen["x"].dtype == torch.float32 and torch.equal(seen["x"], z.float())
    assert seen["c_noise"].dtype == torch.float32
    assert seen["c_noise"].tolist() == pytest.approx([100.0, 500.0, 900.0], abs=1e-3)
    assert torch.equal(seen["labels"], labels)
    assert seen["autocast"] is False
    assert out.dtype == torch.float64
    expected = 2 * z.float() + torch.tensor([0.1, 0.5, 0.9])[:, None, None, None]
    assert torch.allclose(out, expected.double(), atol=1e-6)


def test_network_eps_autocasts_only_when_asked():
    diffusion = DiffusionConfig()
    net = Recorder(torch.float32)
    z = torch.randn(2, 1, 2, 2, dtype=torch.float64)
    lam = torch.zeros(2, dtype=torch.float64)
    labels = torch.zeros(2, dtype=torch.long)
    for dtype in (torch.bfloat16, torch.float16):
        network_eps(net, diffusion, autocast=dtype)(z, lam, labels)
        assert net.seen["autocast"] is True and net.seen["autocast_dtype"] == dtype
    network_eps(net, diffusion)(z, lam, labels)
    assert net.seen["autocast"] is False

"""Throughput and MFU: the device-peak table and measure_mfu's arithmetic (the GPU run is bench/gpu.sh)."""

from __future__ import annotations

import pytest
import torch

from cfgdiff.config import TRAIN_PRESETS, override
from cfgdiff.nn import forward_flops
from cfgdiff.train.throughput import measure_mfu, peak_for_name, peak_tflops


@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H200", 989.4), ("NVIDIA H100 80GB HBM3", 989.4), ("NVIDIA H100 PCIe", 756.5),
    ("NVIDIA H100 NVL", 835.5), ("NVIDIA H200 NVL", 835.5), ("NVIDIA A100-SXM4-80GB", 312.0),
    ("NVIDIA L40S", 362.0), ("NVIDIA A10", 125.0), ("Tesla V100-SXM2-32GB", None), ("Tesla T4", None),
])
def test_peak_by_device_name(name, peak):
    assert peak_for_name(name) == peak


def test_measure_mfu_on_cpu_reports_throughput_and_no_mfu():
    cfg = override(TRAIN_PRESETS["tiny"], batch=2, amp=False)
    r = measure_mfu(cfg, steps=1, warmup=1, device=torch.device("cpu"))
    assert peak_tflops(torch.device("cpu")) is None and r["mfu"] is None and r["peak_tflops"] is None
    assert r["train_flops_per_image"] == 3 * forward_flops(cfg.model)
    assert r["tflops"] == pytest.approx(r["img_per_s"] * r["train_flops_per_image"] / 1e12)
    assert r["img_per_s"] > 0 and r["batch"] == 2
    # Against a given peak, MFU is the achieved fraction of it.
    r = measure_mfu(cfg, steps=1, warmup=1, device=torch.device("cpu"), peak=1.0)
    assert r["mfu"] == pytest.approx(r["tflops"])

"""What a training plan costs on this device, measured before the first step, and what to run instead
when it is far too slow.

One micro-batch (forward and backward of Eq. 5 on real images, gradients then discarded) is timed on
at most MEASURED images and scaled linearly to the micro-batch; a step is `rounds` micro-batches, the
optimiser's share is small beside them. From it: seconds per step, images per second and the ETA to
--kimg. A plan is **too slow** when one optimiser step takes over MAX_STEP_SECONDS or the run over
MAX_RUN_DAYS: a zero-flag `train` then refuses in one line with a command that fits (the `tiny`
preset with a batch whose step takes seconds and a duration of about SUGGESTED_HOURS here); with
explicit flags the same line is a warning and the run starts.

The measurement draws its randomness from its own seed and leaves the weights, the optimiser and the
EMA untouched (every micro-batch of the run reseeds the generators it uses), so a run with it is the
run without it, bit for bit.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from cfgdiff.config import TrainConfig
from cfgdiff.console import duration

MEASURED = {"cuda": 8, "cpu": 32}  # at most this many images timed (scaled to the micro-batch)
TIMED_SECONDS = 2.0  # on a CPU, the timed pass holds as many images as fit in about this long
MAX_STEP_SECONDS = 300.0
MAX_RUN_DAYS = 14.0
SUGGESTED_HOURS = 2.0
SUGGESTED_BATCH = 64


@dataclass(frozen=True)
class Estimate:
    micro_seconds: float  # one micro-batch of `micro` images, forward and backward
    micro: int
    rounds: int  # micro-batches per optimiser step and process
    batch: int
    steps_left: int

    @property
    def step_seconds(self) -> float:
        return self.micro_seconds * self.rounds

    @property
    def img_per_s(self) -> float:
        return self.batch / self.step_seconds

    @property
    def eta_seconds(self) -> float:
        return self.step_seconds * self.steps_left

    def too_slow(self) -> bool:
        return self.step_seconds > MAX_STEP_SECONDS or self.eta_seconds > MAX_RUN_DAYS * 86400

    def as_dict(self) -> dict[str, Any]:
        return {"micro_batch_seconds": self.micro_seconds, "step_seconds": self.step_seconds,
                "img_per_s": self.img_per_s, "eta_seconds": self.eta_seconds, "steps_left": self.steps_left}


def time_micro_batch(m: Any, cfg: TrainConfig, x: torch.Tensor, labels: torch.Tensor, micro: int) -> float:
    """Seconds of one micro-batch of `micro` images: forward + backward of `b` of x's images, scaled
    linearly to `micro`; the gradients are discarded. Each timed pass follows an untimed one of the
    same shape (oneDNN and cuDNN build their kernels per shape: a first pass at a new batch size cost
    10x the second on the tiny net). b is 2, or as many images (at most MEASURED) as fit in about
    TIMED_SECONDS at the rate the 2-image pass showed: a small network's per-image cost falls with the
    batch (2 images 0.23 s, 32 images 0.78 s), so timing 2 images overestimated its step 7x. When
    the first 2-image pass alone takes over TIMED_SECONDS (a 300M network on a CPU) it is the
    measurement: one pass, an upper bound by the kernels' build, small beside its seconds."""
    from cfgdiff.train.step import micro_batch_loss

    def once(n: int) -> float:
        t0 = time.perf_counter()
        micro_batch_loss(m, cfg, x[:n], labels[:n], seed=0).backward()
        if m.device.type == "cuda":
            torch.cuda.synchronize(m.device)
        return time.perf_counter() - t0

    most = max(1, min(len(x), MEASURED.get(m.device.type, MEASURED["cuda"]), micro))
    b = min(2, most)
    t = once(b)  # the first pass at this shape: kernels are built
    if t > TIMED_SECONDS:  # seconds of work (a 300M network on a CPU): the build is small beside it
        m.opt.zero_grad(set_to_none=True)
        return t * micro / b
    t = once(b)  # timed after the warm-up
    wanted = min(most, int(TIMED_SECONDS * b / max(t, 1e-6)))
    if wanted > b:
        b = wanted
        once(b)
        t = once(b)
    seconds = t * micro / b
    m.opt.zero_grad(set_to_none=True)
    return seconds


def measure(m: Any, cfg: TrainConfig, dataset: Any, micro: int, rounds: int,
            steps_left: int) -> tuple[Estimate, torch.Tensor, torch.Tensor]:
    """The plan's Estimate from one timed micro-batch of the dataset's first images (and those images)."""
    n = min(len(dataset), max(MEASURED.values()))
    x = torch.stack([dataset[i][0] for i in range(n)])
    labels = torch.stack([dataset[i][1] for i in range(n)])
    return Estimate(time_micro_batch(m, cfg, x, labels, micro), micro, rounds, cfg.batch, steps_left), x, labels


def line(est: Estimate, device: torch.device, kimg_left: float) -> str:
    """The plan in one line: what a micro-batch and a step take here, img/s, the ETA."""
    return (f"train: plan on {device.type}: a micro-batch of {est.micro} takes {duration(est.micro_seconds)}, "
            f"a step of {est.batch} ({est.rounds} × {est.micro}) {duration(est.step_seconds)}, "
            f"{est.img_per_s:.3g} img/s; ETA {duration(est.eta_seconds)} for "
            f"{f'{kimg_left:,.0f}' if kimg_left >= 1000 else f'{kimg_left:g}'} kimg")


def suggestion(cfg: TrainConfig, tiny_img_per_s: float) -> str:
    """A command that fits this device: the tiny preset, a batch of SUGGESTED_BATCH, about
    SUGGESTED_HOURS of training at the measured speed."""
    kimg = max(1, round(tiny_img_per_s * SUGGESTED_HOURS * 3600 / 1000))
    return (f"cfgdiff train --data {cfg.dataset} --preset tiny --batch {SUGGESTED_BATCH} --kimg {kimg} "
            f"(about {SUGGESTED_HOURS:g} h here), or a GPU")


def tiny_img_per_s(cfg: TrainConfig, x: torch.Tensor, labels: torch.Tensor, device: torch.device) -> float:
    """Training images per second of the tiny preset at this resolution on `device` (for `suggestion`)."""
    from cfgdiff.config import override, train_preset
    from cfgdiff.nn import build_unet
    from cfgdiff.train.step import setup_model

    tiny = train_preset("tiny")
    tiny = override(tiny, model=override(tiny.model, resolution=cfg.model.resolution,
                                         num_classes=cfg.model.num_classes), dataset=cfg.dataset)
    with torch.random.fork_rng(devices=[]):
        m = setup_model(tiny, build_unet(tiny.model), device)
    seconds = time_micro_batch(m, tiny, x, labels, SUGGESTED_BATCH)
    return SUGGESTED_BATCH / seconds if seconds > 0 else math.inf

"""Guided distillation (Meng et al. 2023) inside the training loop: the teacher, the student's start,
and one micro-batch's loss (the stage's, from cfgdiff.diffusion.distill). The chain of run folders that
`cfgdiff distill` trains is cfgdiff.train.distill_chain.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from cfgdiff.config import DistillConfig, TrainConfig
from cfgdiff.diffusion import distill as d
from cfgdiff.diffusion.grids import make_grid
from cfgdiff.diffusion.network import network_eps, network_x
from cfgdiff.errors import CheckpointError


def teacher_lambdas(cfg: TrainConfig, device: torch.device) -> Tensor:
    """A progressive round's teacher grid: 2T − 1 points of the student's grid family (T = distill.steps);
    the student's T points are every other one (grids are uniform in their own coordinate)."""
    assert cfg.distill is not None
    return make_grid(cfg.distill.grid, d.teacher_steps(cfg.distill.steps), cfg.diffusion.lam_min,
                     cfg.diffusion.lam_max, device=device)


def distill_loss(net: nn.Module, teacher: nn.Module, cfg: TrainConfig, x: Tensor, labels: Tensor,
                 autocast: torch.dtype | None, generator: torch.Generator) -> Tensor:
    """Mean loss of one micro-batch of the run's stage (`cfgdiff.diffusion.distill`), float32 scalar."""
    dc = cfg.distill
    assert dc is not None
    student = network_x(net, cfg.diffusion, autocast)
    w_range = (dc.w_min, dc.w_max)
    if dc.stage == "guided":
        plain = dataclasses.replace(cfg.diffusion, prediction="eps")  # stage 1's teacher: a trained ε-network
        loss = d.guided_batch_loss(student, network_eps(teacher, plain, autocast), x, labels,
                                   cfg.model.num_classes, w_range, (cfg.diffusion.lam_min, cfg.diffusion.lam_max),
                                   generator)
    else:
        loss = d.progressive_batch_loss(student, network_x(teacher, cfg.diffusion, autocast), x, labels,
                                        teacher_lambdas(cfg, x.device), w_range, generator=generator)
    return loss.mean().float()


def load_teacher(dc: DistillConfig, device: torch.device) -> nn.Module:
    """The teacher network (EMA weights, eval, no gradients), checked against the recorded SHA-256."""
    from cfgdiff.runs import load_for_sampling

    model = load_for_sampling(dc.teacher, device)
    if dc.teacher_sha256 and model.sha256 != dc.teacher_sha256:
        raise CheckpointError(f"the teacher {dc.teacher} changed since this distillation started (SHA-256 "
                              f"{model.sha256[:12]}…, recorded {dc.teacher_sha256[:12]}…); distill into a new folder")
    return model.net.eval().requires_grad_(False)


def init_student(net: nn.Module, teacher: nn.Module) -> None:
    """Copy the teacher's weights into the student; only the student's own w layers (absent from a
    stage-1 teacher) keep their initialisation (the last one zero: the student starts as the teacher)."""
    missing, unexpected = net.load_state_dict(teacher.state_dict(), strict=False)
    if unexpected or any(not k.startswith("w_mlp.") for k in missing):
        raise CheckpointError(f"the teacher's network does not match the student's ({(unexpected or missing)[0]})")

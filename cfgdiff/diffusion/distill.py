"""Guided distillation (Meng, Rombach, Gao, Kingma, Ermon, Ho, Salimans, CVPR 2023): the targets and
losses, as pure functions of predictors. No networks, no I/O.

Stage 1, the guided student. One w-conditioned network ε_s(z, λ, c, w) learns the teacher's Eq. 6,

    ε̃_w = (1 + w) ε(z, c) − w ε(z, ∅),      w ~ U[w_min, w_max] per example,

so that a guided evaluation is one forward of a B batch instead of a 2B one.

Stage 2, progressive rounds (Salimans & Ho 2022, Alg. 2). On a λ grid of T_t = 2·T_s − 1 points, a
student's one deterministic DDIM step λ_i → λ_{i+2} must land where two of its teacher's land
(λ_i → λ_{i+1} → λ_{i+2}). With DDIM (η = 0) written in λ,

    z_b = α_b x̂ + σ_b (z_a − α_a x̂) / σ_a,

the single step reaches the teacher's z'' from z exactly when its x̂ is

    x̃ = (z'' − (σ''/σ) z) / (α'' − (σ''/σ) α).

cfgdiff's samplers end by returning x̂ at λ_T, one evaluation more than the steps: the student's last
grid point is trained to the teacher's x̂ there (`final_target`).

Loss space and weighting: both stages compare x̂ (the papers' choice), weighted by the truncated SNR
max(SNR, 1) = max(e^λ, 1) (Salimans & Ho 2022, Sec. 4): in ε terms ‖x̂_s − x̂_t‖² = e^{−λ} ‖ε_s − ε_t‖²,
so stage 1's loss is max(1, e^{−λ}) ‖ε_s − ε̃_w‖², which never weights a step below plain ε-MSE.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from cfgdiff.diffusion.schedule import alpha_sigma_at

# x̂ of a w-conditioned predictor at one scalar λ: (z, λ, labels, w) -> x̂, w of shape (B,)
XHatFn = Callable[[Tensor, float, Tensor, Tensor], Tensor]


def _per_sample(v: Tensor, like: Tensor) -> Tensor:
    return v.reshape((-1,) + (1,) * (like.dim() - 1)).to(like.dtype)


def guided_target(eps_c: Tensor, eps_u: Tensor, w: Tensor) -> Tensor:
    """Stage 1's target: Eq. 6 with a w per example (B,)."""
    w = _per_sample(w, eps_c)
    return (1 + w) * eps_c - w * eps_u


def truncated_snr(lam: Tensor) -> Tensor:
    """max(SNR, 1) = max(e^λ, 1), per example: the x̂-space weight of both stages."""
    return torch.exp(lam.double()).clamp(min=1.0)


def stage1_loss(eps_student: Tensor, eps_target: Tensor, lam: Tensor) -> Tensor:
    """Per-example x̂-space loss max(SNR, 1)·‖x̂_s − x̂_t‖² at the same z, written in ε:
    max(e^λ, 1)·e^{−λ}·‖ε_s − ε̃_w‖² = max(1, e^{−λ})·‖ε_s − ε̃_w‖² (mean over the other dimensions)."""
    dims = tuple(range(1, eps_student.dim()))
    se = (eps_student - eps_target).square().mean(dim=dims)
    return se * torch.exp(-lam.double()).clamp(min=1.0).to(se.dtype)


def ddim_step(z: Tensor, x_hat: Tensor, lam_a: float, lam_b: float) -> Tensor:
    """One deterministic DDIM step λ_a → λ_b from x̂: z_b = α_b x̂ + σ_b (z − α_a x̂)/σ_a."""
    (alpha_a, sigma_a), (alpha_b, sigma_b) = alpha_sigma_at(lam_a), alpha_sigma_at(lam_b)
    return alpha_b * x_hat + sigma_b * (z - alpha_a * x_hat) / sigma_a


def single_step_x(z: Tensor, z_end: Tensor, lam_a: float, lam_b: float) -> Tensor:
    """The x̂ whose one DDIM step λ_a → λ_b takes z to z_end (the inverse of `ddim_step` in x̂)."""
    (alpha_a, sigma_a), (alpha_b, sigma_b) = alpha_sigma_at(lam_a), alpha_sigma_at(lam_b)
    ratio = sigma_b / sigma_a
    return (z_end - ratio * z) / (alpha_b - ratio * alpha_a)


def two_step_target(teacher: XHatFn, z: Tensor, lams: tuple[float, float, float], labels: Tensor,
                    w: Tensor) -> Tensor:
    """Stage 2's target x̃ at z (at λ_i): the x̂ of one step λ_i → λ_{i+2} that ends where the teacher's
    two DDIM steps λ_i → λ_{i+1} → λ_{i+2} end (with the same labels and w)."""
    lam_i, lam_mid, lam_j = lams
    z_mid = ddim_step(z, teacher(z, lam_i, labels, w), lam_i, lam_mid)
    z_end = ddim_step(z_mid, teacher(z_mid, lam_mid, labels, w), lam_mid, lam_j)
    return single_step_x(z, z_end, lam_i, lam_j)


def final_target(teacher: XHatFn, z: Tensor, lam_last: float, labels: Tensor, w: Tensor) -> Tensor:
    """Stage 2's target at the grid's last point: the teacher's own x̂ there (what the sampler returns)."""
    return teacher(z, lam_last, labels, w)


def x_loss(x_student: Tensor, x_target: Tensor, lam: float) -> Tensor:
    """Per-example max(e^λ, 1)·‖x̂_s − x̃‖² (mean over the other dimensions)."""
    dims = tuple(range(1, x_student.dim()))
    return (x_student - x_target).square().mean(dim=dims) * max(math.exp(lam), 1.0)


def teacher_steps(student_steps: int) -> int:
    """T_t = 2·T_s − 1: the teacher's grid holds the student's points and one between each pair."""
    if student_steps < 2:
        raise ValueError(f"a student needs at least 2 grid points, got {student_steps}")
    return 2 * student_steps - 1


def rounds_from(final_steps: int, rounds: int) -> list[tuple[int, int]]:
    """(teacher T, student T) of each progressive round, first to last, ending at `final_steps`."""
    chain = [final_steps]
    for _ in range(rounds):
        chain.append(teacher_steps(chain[-1]))
    chain.reverse()
    return list(zip(chain[:-1], chain[1:]))

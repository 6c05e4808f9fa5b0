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
max(SNR, 1) = max(e^λ, 1) (Salimans & Ho 2022, Sec. 4). The student predicts v = α ε − σ x
(DiffusionConfig.prediction), not ε: its x̂ = α z − σ v is exact at every λ, where an ε-network's
x̂ = (z − σ ε)/α multiplies ε's error by e^{−λ/2} (e^{10} at cfgdiff's λ_min = −20), so a few-step
student could not express its first step and the x̂ loss would weight that λ by up to e^{20} (the
papers' reason for v). The ε-teacher's targets are x̂ clipped to [−1, 1], as its sampler uses them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from cfgdiff.diffusion.schedule import alpha, alpha_sigma_at, sample_lambda, sigma

# x̂ of a w-conditioned predictor: (z, λ, labels, w) -> x̂; λ a float or one per example (B,), w (B,)
XHatFn = Callable[[Tensor, "float | Tensor", Tensor, Tensor], Tensor]
# ε of a network: (z, λ (B,), labels) -> ε (Eq. 5's predictor)
EpsFn = Callable[[Tensor, Tensor, Tensor], Tensor]
Lam = float | Tensor


def _per_sample(v: Tensor, like: Tensor) -> Tensor:
    return v.reshape((-1,) + (1,) * (like.dim() - 1)).to(like.dtype)


def _alpha_sigma(lam: Lam, like: Tensor) -> tuple[float | Tensor, float | Tensor]:
    """α_λ, σ_λ: Python floats for one λ, per-example columns for a (B,) tensor of λ."""
    if isinstance(lam, Tensor):
        lam = lam.double()
        return _per_sample(alpha(lam), like), _per_sample(sigma(lam), like)
    return alpha_sigma_at(lam)


def guided_target(eps_c: Tensor, eps_u: Tensor, w: Tensor) -> Tensor:
    """Stage 1's target: Eq. 6 with a w per example (B,)."""
    w = _per_sample(w, eps_c)
    return (1 + w) * eps_c - w * eps_u


def truncated_snr(lam: Tensor) -> Tensor:
    """max(SNR, 1) = max(e^λ, 1), per example: the x̂-space weight of both stages."""
    return torch.exp(lam.double()).clamp(min=1.0)


def x_from_eps(z: Tensor, eps: Tensor, lam: Lam, clip: bool = True) -> Tensor:
    """x̂ = (z − σ ε)/α of an ε-prediction, clipped to [−1, 1] with `clip` (as the samplers use it)."""
    a, s = _alpha_sigma(lam, z)
    x_hat = (z - s * eps) / a
    return x_hat.clamp(-1.0, 1.0) if clip else x_hat


def ddim_step(z: Tensor, x_hat: Tensor, lam_a: Lam, lam_b: Lam) -> Tensor:
    """One deterministic DDIM step λ_a → λ_b from x̂: z_b = α_b x̂ + σ_b (z − α_a x̂)/σ_a."""
    (alpha_a, sigma_a), (alpha_b, sigma_b) = _alpha_sigma(lam_a, z), _alpha_sigma(lam_b, z)
    return alpha_b * x_hat + sigma_b * (z - alpha_a * x_hat) / sigma_a


def single_step_x(z: Tensor, z_end: Tensor, lam_a: Lam, lam_b: Lam) -> Tensor:
    """The x̂ whose one DDIM step λ_a → λ_b takes z to z_end (the inverse of `ddim_step` in x̂)."""
    (alpha_a, sigma_a), (alpha_b, sigma_b) = _alpha_sigma(lam_a, z), _alpha_sigma(lam_b, z)
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


def x_loss(x_student: Tensor, x_target: Tensor, lam: Lam) -> Tensor:
    """Per-example max(e^λ, 1)·‖x̂_s − x̃‖² (mean over the other dimensions); λ one or one per example."""
    dims = tuple(range(1, x_student.dim()))
    se = (x_student - x_target).square().mean(dim=dims)
    if isinstance(lam, Tensor):
        return se * truncated_snr(lam).to(se.dtype)
    return se * max(math.exp(lam), 1.0)


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


# ---- one training micro-batch of each stage (cfgdiff.train.distill feeds the networks) ---------------

def draw_w(n: int, w_min: float, w_max: float, generator: torch.Generator | None, device: torch.device | str
           ) -> Tensor:
    """w ~ U[w_min, w_max] per example, float64 (B,)."""
    return w_min + (w_max - w_min) * torch.rand(n, generator=generator, dtype=torch.float64, device=device)


def guided_batch_loss(student: XHatFn, teacher: EpsFn, x: Tensor, labels: Tensor, null_label: int,
                      w_range: tuple[float, float], lam_range: tuple[float, float],
                      generator: torch.Generator | None = None) -> Tensor:
    """Stage 1 on a data batch x, per example (B,): λ ~ p(λ) as in training (Eq. 5), ε ~ N(0, I),
    z = α x + σ ε, w ~ U[w_min, w_max]; the teacher's Eq. 6 at that w from ONE 2B forward (labels,
    then ∅), as the clipped x̂ its sampler would use; `x_loss` of the student's x̂(z, λ, c, w)."""
    b = x.shape[0]
    lam = sample_lambda(b, *lam_range, generator=generator, device=x.device)  # (B,) float64
    eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=torch.float64)
    a, s = _alpha_sigma(lam, eps)
    z = a * x.double() + s * eps
    w = draw_w(b, *w_range, generator, x.device)
    with torch.no_grad():
        null = torch.full_like(labels, null_label)
        eps_c, eps_u = teacher(torch.cat([z, z]), torch.cat([lam, lam]), torch.cat([labels, null])).double().chunk(2)
        target = x_from_eps(z, guided_target(eps_c, eps_u, w), lam)
    return x_loss(student(z, lam, labels, w), target, lam)


def progressive_batch_loss(student: XHatFn, teacher: XHatFn, x: Tensor, labels: Tensor, teacher_lams: Tensor,
                           w_range: tuple[float, float], generator: torch.Generator | None = None) -> Tensor:
    """Stage 2 on a data batch x, per example (B,). The student's grid is every other point of the
    teacher's (`teacher_lams`, 2T − 1 points); each example draws a student point i uniformly, w, ε,
    and z = α_i x + σ_i ε. Target: for i < T − 1 the x̂ of one DDIM step λ_i → λ_{i+2} that lands where
    the teacher's two (λ_i → λ_{i+1} → λ_{i+2}, its x̂ clipped as its sampler does) land
    (`two_step_target`); at the last point, the teacher's x̂ (`final_target`). Loss: `x_loss`."""
    n_t = teacher_lams.shape[0]
    if n_t < 3 or n_t % 2 == 0:
        raise ValueError(f"a teacher grid has 2T − 1 >= 3 points, got {n_t}")
    b, n_s = x.shape[0], (n_t + 1) // 2
    i = torch.randint(0, n_s, (b,), generator=generator, device=x.device)
    k = 2 * i
    last = i == n_s - 1
    lam_i = teacher_lams[k]
    lam_mid, lam_j = teacher_lams[(k + 1).clamp(max=n_t - 1)], teacher_lams[(k + 2).clamp(max=n_t - 1)]
    w = draw_w(b, *w_range, generator, x.device)
    eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=torch.float64)
    a, s = _alpha_sigma(lam_i, eps)
    z = a * x.double() + s * eps

    def teacher_x(z: Tensor, lam: Tensor) -> Tensor:
        return teacher(z, lam, labels, w).clamp(-1.0, 1.0)

    with torch.no_grad():
        x1 = teacher_x(z, lam_i)
        z_mid = ddim_step(z, x1, lam_i, lam_mid)
        z_end = ddim_step(z_mid, teacher_x(z_mid, lam_mid), lam_mid, lam_j)
        # at the last point λ_i = λ_mid = λ_j: the single step is 0/0 there, and the target is x1
        target = torch.where(_per_sample(last, z).bool(), x1, single_step_x(z, z_end, lam_i, lam_j))
    return x_loss(student(z, lam_i, labels, w), target, lam_i)

"""Guided distillation's targets (cfgdiff.diffusion.distill) against closed forms on the exact
Gaussian-mixture teacher (diffusion/toy.py), and a 2-D student trained here that reproduces the
teacher's two-step map. Every DDIM step in this file is written out again from α, σ, not imported."""

from __future__ import annotations

import pytest

import math

import torch

from cfgdiff.diffusion import distill
from cfgdiff.diffusion.grids import make_grid
from cfgdiff.diffusion.toy import default_mixture

MIX = default_mixture()
K = MIX.num_classes
ITERS, BATCH, W_MAX = 200, 128, 4.0  # the toy student trains in seconds


def a_s(lam: float) -> tuple[float, float]:
    return math.sqrt(1 / (1 + math.exp(-lam))), math.sqrt(1 / (1 + math.exp(lam)))


def teacher_eps(z: torch.Tensor, lam: float, labels: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The exact guided ε̃ of the mixture, Eq. 6 written out per example."""
    lam_b = torch.full((z.shape[0],), lam, dtype=torch.float64)
    e_c, e_u = MIX.eps(z, lam_b, labels), MIX.eps(z, lam_b, torch.full_like(labels, K))
    return e_c + w[:, None] * (e_c - e_u)


def teacher_x(z, lam, labels, w):
    alpha, sigma = a_s(lam)
    return (z - sigma * teacher_eps(z, lam, labels, w)) / alpha


def _batch(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 2, generator=g, dtype=torch.float64)
    labels = torch.randint(0, K, (n,), generator=g)
    w = torch.rand(n, generator=g, dtype=torch.float64) * 4
    return z, labels, w


def test_stage1_target_is_eq6_in_closed_form_and_its_own_minimum():
    z, labels, w = _batch()
    lam = torch.full((64,), 1.5, dtype=torch.float64)
    e_c, e_u = MIX.eps(z, lam, labels), MIX.eps(z, lam, torch.full_like(labels, K))
    target = distill.guided_target(e_c, e_u, w)
    # closed form: the mixture's ε(z, c) = σ (z − α μ_c)/τ², ε(z) its posterior mean, combined by Eq. 6
    alpha, sigma = a_s(1.5)
    tau2 = alpha**2 * MIX.s**2 + sigma**2
    eps_c = sigma * (z - alpha * MIX.mu[labels]) / tau2
    post = torch.softmax(-((z[:, None] - alpha * MIX.mu[None]) ** 2).sum(-1) / (2 * tau2), dim=1)
    eps_u = (post[:, :, None] * (sigma * (z[:, None] - alpha * MIX.mu[None]) / tau2)).sum(1)
    torch.testing.assert_close(target, (1 + w[:, None]) * eps_c - w[:, None] * eps_u, rtol=1e-12, atol=1e-12)


def _columns(lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """α, σ per example as (B, 1) columns, from the sigmoid written out."""
    return torch.sqrt(torch.sigmoid(lam))[:, None], torch.sqrt(torch.sigmoid(-lam))[:, None]


def _mixture_eps(z, lam, labels):  # the ε-teacher of stage 1: labels, then ∅ = K, one call
    return MIX.eps(z, lam, labels)


def test_stage1_batch_loss_is_zero_for_the_clipped_eq6_x_hat_and_weighted_by_truncated_snr():
    """The student sees z, λ, c, w; an oracle student that re-derives the teacher's guided x̂ (Eq. 6 from
    the mixture's closed form, clipped to [−1, 1]) from exactly those has zero loss; one off by δ has
    max(e^λ, 1)·δ² (the truncated SNR weight). A loss that gave the student another w, z or label than
    the target's, or skipped the clip, would not be zero."""
    seen = {}

    def oracle(z, lam, labels, w, delta=0.0):
        alpha, sigma = _columns(lam)
        e_c = MIX.eps(z, lam, labels)
        e_u = MIX.eps(z, lam, torch.full_like(labels, K))
        x_hat = ((z - sigma * ((1 + w[:, None]) * e_c - w[:, None] * e_u)) / alpha).clamp(-1, 1)
        seen["lam"] = lam
        return x_hat + delta

    g = torch.Generator().manual_seed(3)
    x = MIX.sample(torch.randint(0, K, (256,), generator=g), g)
    labels = torch.randint(0, K, (256,), generator=g)
    args = (x, labels, K, (0.0, 4.0), (-20.0, 20.0))
    loss = distill.guided_batch_loss(oracle, _mixture_eps, *args, generator=torch.Generator().manual_seed(0))
    assert loss.abs().max() < 1e-24  # rounding only (the x̂ weights reach e^20)
    off = distill.guided_batch_loss(lambda *a: oracle(*a, delta=0.1), _mixture_eps, *args,
                                    generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(off, 0.01 * torch.exp(seen["lam"]).clamp(min=1), rtol=1e-9, atol=0)
    assert seen["lam"].min() < -5 and seen["lam"].max() > 5  # λ ~ p(λ) covers both ends


def test_progressive_batch_loss_targets_two_clipped_teacher_steps_per_example():
    """Each example's target, re-derived here: two DDIM steps of the (clipped) teacher from its λ_i on
    the 2T − 1 grid, inverted to the one-step x̂; at the student's last point, the teacher's x̂. An
    oracle student returning that has zero loss; one teacher step instead of two, or w not given to
    the teacher, would not be zero."""
    lams_t = make_grid("paper", distill.teacher_steps(4), -20.0, 20.0)
    t = lams_t.tolist()

    def teacher(z, lam, labels, w):  # the guided mixture's x̂ at per-example λ (unclipped; the loss clips)
        alpha, sigma = _columns(lam)
        e_c, e_u = MIX.eps(z, lam, labels), MIX.eps(z, lam, torch.full_like(labels, K))
        return (z - sigma * ((1 + w[:, None]) * e_c - w[:, None] * e_u)) / alpha

    def step(z, x, a, b):
        (aa, sa), (ab, sb) = a_s(a), a_s(b)
        return ab * x + sb * (z - aa * x) / sa

    def oracle(z, lam, labels, w):
        out = torch.empty_like(z)
        for n in range(z.shape[0]):
            k = t.index(float(lam[n]))
            one = lambda zz, ll: teacher(zz, torch.tensor([ll], dtype=torch.float64), labels[n:n + 1], w[n:n + 1]).clamp(-1, 1)
            zn = z[n:n + 1]
            x1 = one(zn, t[k])
            if k == len(t) - 1:
                out[n] = x1[0]
                continue
            z_mid = step(zn, x1, t[k], t[k + 1])
            z_end = step(z_mid, one(z_mid, t[k + 1]), t[k + 1], t[k + 2])
            (ai, si), (aj, sj) = a_s(t[k]), a_s(t[k + 2])
            out[n] = ((z_end - (sj / si) * zn) / (aj - (sj / si) * ai))[0]
        return out

    g = torch.Generator().manual_seed(4)
    x = MIX.sample(torch.randint(0, K, (96,), generator=g), g)
    labels = torch.randint(0, K, (96,), generator=g)
    loss = distill.progressive_batch_loss(oracle, teacher, x, labels, lams_t, (0.0, 4.0),
                                          generator=torch.Generator().manual_seed(1))
    assert loss.shape == (96,) and loss.max() < 1e-16


def test_two_step_target_is_two_teacher_ddim_steps_rederived():
    z, labels, w = _batch()
    lams = (-3.0, 0.5, 4.0)
    target = distill.two_step_target(teacher_x, z, lams, labels, w)
    # the teacher's two DDIM steps, written out
    zz = z
    for lam_a, lam_b in zip(lams[:-1], lams[1:]):
        (aa, sa), (ab, sb) = a_s(lam_a), a_s(lam_b)
        x = teacher_x(zz, lam_a, labels, w)
        zz = ab * x + sb * (zz - aa * x) / sa
    # the student's one step from z with x̂ = target must reach zz
    (ai, si), (aj, sj) = a_s(lams[0]), a_s(lams[2])
    one_step = aj * target + sj * (z - ai * target) / si
    torch.testing.assert_close(one_step, zz, rtol=1e-10, atol=1e-10)
    # and it is not the teacher's own one-step x̂ (two steps are not one)
    assert not torch.allclose(target, teacher_x(z, lams[0], labels, w), atol=1e-3)
    assert distill.x_loss(target, target, lams[0]).abs().max() == 0


def test_student_grids_nest_in_their_teachers():
    assert distill.rounds_from(4, 2) == [(13, 7), (7, 4)]
    for grid in ("paper", "linear"):
        for t_s in (2, 4, 8):
            teacher = make_grid(grid, distill.teacher_steps(t_s), -20.0, 20.0)
            torch.testing.assert_close(teacher[::2], make_grid(grid, t_s, -20.0, 20.0), rtol=0, atol=1e-12)


class Student(torch.nn.Module):
    """x̂_s(z, λ index, c, w): a small MLP for a fixed grid; `use_w=False` is the 'w not fed' mutant."""

    def __init__(self, points: int, use_w: bool = True):
        super().__init__()
        self.use_w = use_w
        self.embed = torch.nn.Embedding(points * K, 16)
        self.net = torch.nn.Sequential(torch.nn.Linear(2 + 16 + 1, 128), torch.nn.SiLU(), torch.nn.Linear(128, 128),
                                       torch.nn.SiLU(), torch.nn.Linear(128, 2))

    def forward(self, z, i, labels, w):
        w_in = w[:, None] if self.use_w else torch.zeros_like(w)[:, None]
        return z + self.net(torch.cat([z, self.embed(i * K + labels), w_in], 1))


def _train_student(grid: list[float], use_w: bool, teacher_steps_per_step: int) -> tuple[Student, float]:
    """A progressive round of a one-step student (T = 2) from a two-step teacher (T = 3): the step
    λ_0 → λ_1 is trained to the teacher's two steps (or one, the mutant); returns the student and
    its mean relative endpoint error on fresh z against the teacher's two steps."""
    torch.manual_seed(0)
    student = Student(len(grid), use_w).double()
    opt = torch.optim.Adam(student.parameters(), lr=3e-3)
    t_grid = make_grid("linear", distill.teacher_steps(len(grid)), grid[0], grid[-1]).tolist()
    lams = (t_grid[0], t_grid[1], t_grid[2])

    def target(z, labels, w):
        if teacher_steps_per_step == 2:
            return distill.two_step_target(teacher_x, z, lams, labels, w)
        return teacher_x(z, lams[0], labels, w)  # mutant: one teacher step
    i0 = torch.zeros(BATCH, dtype=torch.long)
    (a0, s0) = a_s(lams[0])
    for it in range(ITERS):
        g = torch.Generator().manual_seed(it)
        x0 = MIX.sample(torch.randint(0, K, (BATCH,), generator=g), g)
        labels = torch.randint(0, K, (BATCH,), generator=g)
        w = torch.rand(BATCH, generator=g, dtype=torch.float64) * W_MAX
        z = a0 * x0 + s0 * torch.randn(BATCH, 2, generator=g, dtype=torch.float64)
        with torch.no_grad():
            t = target(z, labels, w)
        loss = distill.x_loss(student(z, i0, labels, w), t, lams[0]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    # the endpoint map on fresh points: student's one step against the teacher's two
    g = torch.Generator().manual_seed(10_000)
    x0 = MIX.sample(torch.randint(0, K, (2000,), generator=g), g)
    labels = torch.randint(0, K, (2000,), generator=g)
    w = torch.rand(2000, generator=g, dtype=torch.float64) * W_MAX
    z = a0 * x0 + s0 * torch.randn(2000, 2, generator=g, dtype=torch.float64)
    with torch.no_grad():
        z_s = distill.ddim_step(z, student(z, torch.zeros(2000, dtype=torch.long), labels, w), lams[0], lams[2])
        z_t = z
        for a, b in zip(lams[:-1], lams[1:]):
            z_t = distill.ddim_step(z_t, teacher_x(z_t, a, labels, w), a, b)
    return student, float(((z_s - z_t).norm(dim=1) / z_t.norm(dim=1)).mean())


@pytest.mark.slow
def test_a_trained_student_reproduces_the_teachers_two_step_map():
    """λ from −2 to 8 in one student step, where the classes separate: there the teacher's one DDIM
    step lands 45% (relative) away from its two, so the mutants cannot pass by accident."""
    grid = make_grid("linear", 2, -2.0, 8.0).tolist()
    _, err = _train_student(grid, use_w=True, teacher_steps_per_step=2)
    assert err < 0.05  # measured 0.016, over w in [0, 4] and the three classes
    _, err_no_w = _train_student(grid, use_w=False, teacher_steps_per_step=2)
    assert err_no_w > 0.15  # the 'w not fed to the student' mutant cannot follow the teacher's w (0.31)
    _, err_one = _train_student(grid, use_w=True, teacher_steps_per_step=1)
    assert err_one > 0.15  # trained to one teacher step instead of two: another map (0.46)

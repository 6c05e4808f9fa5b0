"""`cfgdiff distill` as a user runs it: a tiny trained teacher, stage 1 and one progressive round, then
`sample` on the student with its own defaults (DDIM on its grid, one evaluation a step), its w range
enforced in one line, and a rerun that trains nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from faults_support import cfgdiff, env_for, error_lines

pytestmark = pytest.mark.slow  # distils a tiny run (stage 1 and one round) once per module


@pytest.fixture(scope="module")
def distilled(tmp_path_factory, trained_workspace) -> Path:
    base = tmp_path_factory.mktemp("distill")
    src = trained_workspace
    shutil.copytree(src / "data", base / "data")
    shutil.copytree(src / "runs" / "tiny", base / "runs" / "tiny")
    shutil.copy(src / "ref.npz", base / "ref.npz")
    run = cfgdiff(["distill", "runs/tiny", "--steps", "2", "--rounds", "1", "--kimg", "0.064", "--batch", "32",
                   "--w-range", "0:3", "--workers", "0", "--json"], base, env_for(base))
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert [s["stage"] for s in doc["results"]["stages"]] == ["guided", "round 1: 3 -> 2 steps"]
    from cfgdiff.files import sha256_file

    teacher = Path(doc["inputs"]["teacher"])
    assert teacher.name.startswith("ema-") and doc["provenance"]["teacher_sha256"] == sha256_file(base / teacher)
    return base


def _config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def test_each_stage_is_a_run_folder_that_records_what_it_learned(distilled):
    guided, student = distilled / "runs" / "tiny-distill" / "guided", distilled / "runs" / "tiny-distill" / "steps-2"
    g, s = _config(guided), _config(student)
    assert g["distill"]["stage"] == "guided" and s["distill"]["stage"] == "progressive"
    assert (g["distill"]["w_min"], g["distill"]["w_max"]) == (0.0, 3.0) == (s["distill"]["w_min"], s["distill"]["w_max"])
    assert g["distill"]["steps"] == 3 and s["distill"]["steps"] == 2  # T_teacher = 2·T_student − 1
    assert g["model"]["w_embedding"] and g["diffusion"]["prediction"] == "v"
    # the round's teacher is stage 1's newest EMA file, pinned by its SHA-256
    from cfgdiff.files import sha256_file

    teacher = Path(s["distill"]["teacher"])
    assert teacher.parent.name == "guided" and s["distill"]["teacher_sha256"] == sha256_file(distilled / teacher)
    assert (guided / "stats.jsonl").exists() and (student / "log.txt").exists()


def test_a_student_starts_as_its_teacher_plus_a_zero_w_layer(distilled, tmp_path):
    """Stage 1's student copies every teacher weight; its w layers are new, the last one zero."""
    from cfgdiff.config import TrainConfig, from_dict
    from cfgdiff.nn.unet import build_unet
    from cfgdiff.runs import load_for_sampling
    from cfgdiff.train.distill import init_student

    teacher = load_for_sampling(distilled / "runs" / "tiny").net
    cfg = from_dict(TrainConfig, _config(distilled / "runs" / "tiny-distill" / "guided"))
    student = build_unet(cfg.model)
    init_student(student, teacher)
    t, s = teacher.state_dict(), student.state_dict()
    assert all(torch.equal(t[k], s[k]) for k in t) and set(s) - set(t) == {k for k in s if k.startswith("w_mlp.")}
    assert torch.count_nonzero(s["w_mlp.2.weight"]) == 0 and torch.count_nonzero(s["w_mlp.2.bias"]) == 0


def test_sample_uses_the_students_sampler_and_counts_one_evaluation_a_step(distilled):
    env = env_for(distilled)
    run = cfgdiff(["sample", "runs/tiny-distill/steps-2", "--w", "2", "--n", "4", "--out", "s.npz", "--json"],
                  distilled, env)
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    sampler = doc["settings"]["sampler"]
    assert (sampler["sampler"], sampler["steps"], sampler["grid"]) == ("ddim", 2, "paper")
    assert doc["results"]["nfe_per_sample"] == 2  # guided, yet one B-batch forward a step
    # the stochastic sampler of the distillation paper, on request
    run = cfgdiff(["sample", "runs/tiny-distill/guided", "--w", "1", "--n", "4", "--sampler", "distill-sde",
                   "--out", "sde.npz"], distilled, env)
    assert run.returncode == 0, run.stderr
    assert "distill-sde, w=1.0, T=3, NFE 3/sample" in run.stderr + run.stdout


@pytest.mark.parametrize("args", [["--w", "3.5"], ["--w", "1", "--rescale", "0.5"], ["--w", "1", "--guidance", "apg"],
                                  ["--w", "1", "--guidance-interval", "-5:5"]])
def test_what_a_student_cannot_do_is_one_line(distilled, args):
    run = cfgdiff(["sample", "runs/tiny-distill/steps-2", "--n", "2", "--out", "bad.npz", *args], distilled,
                  env_for(distilled))
    assert run.returncode == 2 and len(error_lines(run.stderr)) == 1, run.stderr
    assert "distilled student" in run.stderr and not (distilled / "bad.npz").exists()


def test_a_student_cannot_guide_a_plain_run(distilled):
    run = cfgdiff(["sample", "runs/tiny", "--w", "1", "--n", "2", "--guide-with", "runs/tiny-distill/steps-2",
                   "--out", "g.npz"], distilled, env_for(distilled))
    assert run.returncode == 2 and len(error_lines(run.stderr)) == 1 and "guide network is a distilled student" in run.stderr


def test_a_rerun_trains_nothing_and_a_student_is_not_distilled_twice_by_stage_1(distilled):
    folder = distilled / "runs" / "tiny-distill" / "steps-2"
    before = sorted(p.name for p in folder.iterdir())
    stamp = (folder / "stats.jsonl").stat().st_mtime_ns
    run = cfgdiff(["distill", "runs/tiny", "--steps", "2", "--rounds", "1", "--kimg", "0.064", "--batch", "32",
                   "--w-range", "0:3", "--workers", "0"], distilled, env_for(distilled))
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in folder.iterdir()) == before and (folder / "stats.jsonl").stat().st_mtime_ns == stamp
    run = cfgdiff(["distill", "runs/tiny-distill/steps-2", "--stage", "guided"], distilled, env_for(distilled))
    assert run.returncode != 0 and "already a distilled student" in run.stderr
    run = cfgdiff(["distill", "runs/tiny-distill/steps-2", "--stage", "progressive", "--steps", "2", "--rounds", "1"],
                  distilled, env_for(distilled))
    assert run.returncode == 2 and "was distilled for T = 2" in run.stderr and len(error_lines(run.stderr)) == 1
    run = cfgdiff(["distill", "runs/tiny", "--stage", "progressive"], distilled, env_for(distilled))
    assert run.returncode == 2 and "is not a distilled student" in run.stderr


def test_sweep_on_a_student_uses_its_sampler_and_counts_one_evaluation_a_step(distilled):
    run = cfgdiff(["sweep", "runs/tiny-distill/steps-2", "--w", "0,2", "--n", "10", "--ref", "ref.npz",
                   "--metrics", "fid", "--out-dir", "sw", "--json"], distilled, env_for(distilled))
    assert run.returncode == 0, run.stderr
    rows = [json.loads(line) for line in (distilled / "sw" / "sweep.jsonl").read_text().splitlines()]
    assert {(r["sampler"], r["steps"], r["w"], r["nfe"]) for r in rows} == {("ddim", 2, 0.0, 2),
                                                                                         ("ddim", 2, 2.0, 2)}
    assert all(r["fid"] is not None for r in rows)
    bad = cfgdiff(["sweep", "runs/tiny-distill/steps-2", "--w", "0,4", "--n", "10", "--ref", "ref.npz",
                   "--out-dir", "sw2"], distilled, env_for(distilled))
    assert bad.returncode == 2 and "outside this distilled student's range 0:3" in bad.stderr


def test_a_distillation_resumed_midway_ends_with_the_same_weights(distilled):
    """Stage 1 for 4 steps at once, and for 2 steps then resumed to 4 (kimg is a resumable change):
    the same EMA weights, bit for bit (train's exact resume; the teacher is deterministic)."""
    from cfgdiff.runs import load_for_sampling

    env, common = env_for(distilled), ["distill", "runs/tiny", "--stage", "guided", "--batch", "16", "--workers", "0"]
    for out, kimgs in (("once", ["0.064"]), ("twice", ["0.032", "0.064"])):
        for kimg in kimgs:
            run = cfgdiff([*common, "--kimg", kimg, "--out", out], distilled, env)
            assert run.returncode == 0, run.stderr
    a = load_for_sampling(distilled / "once" / "guided").net.state_dict()
    b = load_for_sampling(distilled / "twice" / "guided").net.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], t) for k, t in load_for_sampling(distilled / "runs" / "tiny").net.state_dict().items())


def test_sweep_resolves_unset_axes_to_the_runs_own_sampler():
    from cfgdiff.config import DistillConfig, ModelConfig, SweepConfig, TrainConfig

    student = TrainConfig(model=ModelConfig(w_embedding=True), distill=DistillConfig(steps=4, grid="linear"))
    req = SweepConfig(checkpoint=None, w="0,1", n=10)
    rows = req.with_defaults(student).combinations()
    assert {(c.sampler, c.steps, c.grid) for c in rows} == {("ddim", 4, "linear")}
    assert {(c.sampler, c.steps, c.grid) for c in req.with_defaults(TrainConfig()).combinations()} == {
        ("ancestral", 256, "paper")}
    kept = SweepConfig(checkpoint=None, w="0", n=10, steps=(8,)).with_defaults(student).combinations()
    assert [(c.sampler, c.steps) for c in kept] == [("ddim", 8)]

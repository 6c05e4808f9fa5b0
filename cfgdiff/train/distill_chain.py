"""`cfgdiff distill`: guided distillation (Meng et al. 2023) as a chain of runs of the training loop
(the loss, the teacher and the student's start: cfgdiff.train.distill).

A distillation is a chain of ordinary run folders, each trained by `cfgdiff.train.loop.train` (EMA,
bf16, DDP under torchrun, exact resume, stops, progress, log.txt and stats.jsonl, the dataset check),
each with `TrainConfig.distill` set and the w-conditioned network (model.w_embedding):

    OUT/guided/       stage 1: ε_s(z, λ, c, w) learns the teacher's Eq. 6 at w ~ U[w_min, w_max]
    OUT/steps-25/     stage 2, round 1: 25 DDIM steps of the student = 49 of the guided student
    OUT/steps-13/     round 2: 13 = 25 of round 1's student ... down to OUT/steps-<--steps>

Each student starts from its teacher's EMA weights. Stage 1 adds the w layers (the last one zero) and
reads the output as v instead of ε (DiffusionConfig.prediction): the same at the clean end, where
v = α ε − σ x ≈ ε, and learnt elsewhere in stage 1 (cfgdiff.diffusion.distill says why v). A round's teacher is the previous folder's newest EMA file; its
SHA-256 is recorded, so a resumed round refuses a teacher changed under it. Rerunning the command
skips finished folders and resumes the first unfinished one.

Every folder is a run that `sample`, `sweep`, `export` and `score` take like any other: they read
`distill` from its config (the w range, the steps and grid that `sample` defaults to).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from cfgdiff.config import DistillConfig, TrainConfig
from cfgdiff.diffusion import distill as d
from cfgdiff.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class DistillRequest:
    """What `cfgdiff distill` was asked for (the CLI's flags, checked together).

    teacher: a trained run folder or weights file; for --stage progressive, a student's.
    stage: "all" (stage 1, then the rounds), "guided" (stage 1 only) or "progressive" (rounds only).
    steps: the last student's T; rounds: progressive rounds (each halves T: 2T − 1 → T).
    kimg: training images per stage and per round (None: a tenth of the teacher's, at least 1).
    """

    teacher: Path
    out: Path | None = None
    stage: str = "all"
    steps: int = 4
    rounds: int = 4
    kimg: float | None = None
    w_min: float | None = None  # None: 0:4 (a student teacher: its own range)
    w_max: float | None = None
    grid: str | None = None  # None: paper (a student teacher: its own)
    data: str | None = None
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)  # TrainConfig fields: lr, batch, ...

    def __post_init__(self) -> None:
        if self.stage not in ("all", "guided", "progressive"):
            raise ConfigError(f"--stage must be all, guided or progressive, got {self.stage!r}")
        if not isinstance(self.rounds, int) or self.rounds < 0 or (self.stage == "progressive" and self.rounds < 1):
            raise ConfigError(f"--rounds must be an integer >= {1 if self.stage == 'progressive' else 0}, "
                              f"got {self.rounds!r}")
        if (self.w_min is None) != (self.w_max is None):
            raise ConfigError("give both ends of the w range, or neither")
        DistillConfig(w_min=0.0 if self.w_min is None else self.w_min, w_max=4.0 if self.w_max is None else self.w_max,
                      steps=self.steps, grid=self.grid or "paper")  # the same rules
        if self.kimg is not None and not (isinstance(self.kimg, (int, float)) and 0 < self.kimg < float("inf")):
            raise ConfigError(f"--kimg must be a positive number, got {self.kimg!r}")

    def chain(self) -> list[tuple[int, int]]:
        """(teacher T, student T) of each progressive round, first to last."""
        return d.rounds_from(self.steps, self.rounds) if self.stage != "guided" else []


def stage_config(base: TrainConfig, run_dir: Path, dc: DistillConfig, kimg: float, data: str,
                 overrides: dict[str, Any]) -> TrainConfig:
    """The TrainConfig of one stage or round: the teacher's network with the w input and its recipe
    (flags and --set on top), EMA warm-up on (short runs), previews with the student's own sampler.
    The micro-batch is resolved again on this device (a distillation step also holds the teacher's
    activations), unless --batch-per-device is given."""
    from cfgdiff.config import apply_overrides

    cfg = dataclasses.replace(
        base, model=dataclasses.replace(base.model, w_embedding=True), distill=dc, run_dir=str(run_dir),
        diffusion=dataclasses.replace(base.diffusion, prediction="v"),
        dataset=data, kimg=kimg, ema_warmup=True, batch_per_device=0, tick_kimg=min(base.tick_kimg, kimg / 10),
        snapshot_kimg=min(base.snapshot_kimg, kimg / 4), grid_kimg=kimg, grid_sampler="ddim",
        grid_schedule=dc.grid, grid_steps=dc.steps, grid_w=min(max(base.grid_w, dc.w_min), dc.w_max),
    )
    return apply_overrides(cfg, overrides)


def plan_chain(req: DistillRequest) -> list[tuple[str, Path, TrainConfig | None]]:
    """(name, folder, config) of every stage and round in order; a round's config is None until its
    teacher (the previous folder) exists, as its SHA-256 is part of it."""
    from cfgdiff.runs import resolve_weights_file, run_config

    file = resolve_weights_file(req.teacher)
    base = run_config(file)
    if base.model.num_classes == 0:
        raise ConfigError(f"{req.teacher} is an unconditional model: there is no guidance (Eq. 6) to distil")
    if req.stage == "progressive" and base.distill is None:
        raise ConfigError(f"{req.teacher} is not a distilled student; --stage progressive distils a student "
                          "(run --stage guided first, or --stage all)")
    if req.stage != "progressive" and base.distill is not None:
        raise ConfigError(f"{req.teacher} is already a distilled student; distil it further with --stage progressive")
    own = (base.distill.w_min, base.distill.w_max) if base.distill is not None else (0.0, 4.0)
    w_min = own[0] if req.w_min is None else req.w_min
    w_max = own[1] if req.w_max is None else req.w_max
    if base.distill is not None and (w_min, w_max) != own:
        raise ConfigError(f"the w range {w_min:g}:{w_max:g} differs from the teacher student's "
                          f"{own[0]:g}:{own[1]:g}; a round keeps its teacher's range")
    if base.distill is not None and req.grid and req.grid != base.distill.grid:
        raise ConfigError(f"--grid {req.grid} differs from the teacher student's {base.distill.grid}; a round keeps "
                          "its teacher's grid family")
    grid = req.grid or (base.distill.grid if base.distill is not None else "paper")
    out = req.out or file.parent.with_name(file.parent.name + "-distill")
    record = _teacher_record(file)
    data = req.data or _recorded_dataset(record["dataset_info"], file)
    teacher_kimg = record["images_seen"] / 1000
    kimg = req.kimg or max(1.0, round(teacher_kimg / 10, 3))
    chain = req.chain()
    plan: list[tuple[str, Path, TrainConfig | None]] = []
    teacher = str(file)
    if req.stage != "progressive":
        first = chain[0][0] if chain else req.steps
        dc = DistillConfig("guided", teacher, _sha(file), w_min, w_max, first, grid)
        plan.append(("guided", out / "guided", stage_config(base, out / "guided", dc, kimg, data, req.overrides)))
    elif base.distill is not None and chain and chain[0][0] != base.distill.steps:
        raise ConfigError(f"{req.teacher} was distilled for T = {base.distill.steps}; with --steps {req.steps} "
                          f"--rounds {req.rounds} the first round needs a T = {chain[0][0]} teacher")
    for i, (t_teacher, t_student) in enumerate(chain):
        folder = out / f"steps-{t_student}"
        cfg = None
        if i == 0 and req.stage == "progressive":
            dc = DistillConfig("progressive", teacher, _sha(file), w_min, w_max, t_student, grid)
            cfg = stage_config(base, folder, dc, kimg, data, req.overrides)
        plan.append((f"round {i + 1}: {t_teacher} -> {t_student} steps", folder, cfg))
    return plan


def round_config(base_cfg: TrainConfig, teacher_dir: Path, folder: Path, steps: int) -> TrainConfig:
    """A round's config once its teacher folder is trained: the previous config with the new teacher."""
    from cfgdiff.runs import resolve_weights_file

    file = resolve_weights_file(teacher_dir)
    assert base_cfg.distill is not None
    dc = dataclasses.replace(base_cfg.distill, stage="progressive", teacher=str(file), teacher_sha256=_sha(file),
                             steps=steps)
    return dataclasses.replace(base_cfg, distill=dc, run_dir=str(folder), grid_steps=steps)


def run_distill(req: DistillRequest, loggers: list[str] | None = None) -> list[dict[str, Any]]:
    """Train every stage and round of `req` in order (finished ones return at once); their summaries."""
    from cfgdiff import dist
    from cfgdiff.train.loop import train

    plan = plan_chain(req)
    results: list[dict[str, Any]] = []
    previous: TrainConfig | None = None
    for name, folder, cfg in plan:
        if cfg is None:
            assert previous is not None
            cfg = round_config(previous, Path(previous.run_dir), folder, int(folder.name.split("-")[1]))
        dist.print0(f"distill: {name} in {folder} ({cfg.kimg:g} kimg, w in {cfg.distill.w_min:g}:{cfg.distill.w_max:g})")
        results.append({"stage": name, **train(cfg, loggers)})
        previous = cfg
    return results


def _sha(file: Path) -> str:
    from cfgdiff.files import sha256_file

    return sha256_file(file)


def _teacher_record(file: Path) -> dict[str, Any]:
    from cfgdiff.runs import is_safetensors, read_checkpoint, read_safetensors

    return read_safetensors(file) if is_safetensors(file) else read_checkpoint(file)


def _recorded_dataset(info: dict[str, Any], file: Path) -> str:
    """The teacher's training set, as recorded, found near its weights file and verified (else DataError)."""
    from cfgdiff.errors import DataError
    from cfgdiff.runs import locate_dataset

    path, why = locate_dataset(info["path"], info.get("fingerprint"), file.parent)
    if path is None:
        raise DataError(f"{why} (recorded in {file}); pass --data")
    return path

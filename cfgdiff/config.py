"""Every command's config: frozen dataclasses, presets, their JSON round trip, validation, overrides.

One naming scheme, one class per command: PrepareConfig, TrainConfig (with ModelConfig and
DiffusionConfig), SampleConfig, SweepConfig, ScoreConfig, DemoConfig; SamplerConfig is the sampler they
share.
Flags and `--set KEY=VALUE` both reach a config through `apply_overrides`; a field given both ways
is refused (`merge_overrides`). Standard library only (plus errors and parse), so the CLI imports
it for choices and checks without slowing `--help`.

Every artifact cfgdiff writes carries the resolved config (`to_dict`), and every command that reads
an artifact rebuilds it with `from_dict`, which rejects unknown or missing fields rather than
guessing.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import typing
from pathlib import Path
from typing import Any, TypeVar

from cfgdiff.diffusion.sampler_registry import BUILTIN, get_sampler
from cfgdiff.errors import ConfigError
from cfgdiff.parse import check_w, label_mode, parse_grid, parse_interval, parse_sets, seeds_for

C = TypeVar("C")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) config dataclass; tuples become lists."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(cls: type[C], data: dict[str, Any]) -> C:
    """Rebuild `cls` from `to_dict` output. Unknown keys are an error; missing keys take defaults."""
    if not isinstance(data, dict):
        raise ConfigError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown field(s) {', '.join(unknown)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        hint = _dataclass_in(hints[name])
        if hint is not None and value is not None:
            value = from_dict(hint, value)
        hint = hints[name]
        kwargs[name] = _coerce(hint, value)
    return cls(**kwargs)


def _dataclass_in(hint: Any) -> Any:
    """The dataclass a field holds (`X` or `X | None`), else None."""
    if dataclasses.is_dataclass(hint):
        return hint
    inner = [a for a in typing.get_args(hint) if a is not type(None)]
    return inner[0] if len(inner) == 1 and dataclasses.is_dataclass(inner[0]) else None


def _coerce(hint: Any, value: Any) -> Any:
    """JSON lists become the tuples a field is typed as."""
    return tuple(value) if typing.get_origin(hint) is tuple and isinstance(value, list) else value


def apply_overrides(cfg: C, changes: dict[str, Any]) -> C:
    """`cfg` with `changes` applied: keys as in config.json, nested ones as `model.dropout`; None
    (an unset flag) changes nothing; unknown fields are named; the dataclasses validate the result.
    The one way flags and `--set` reach a config."""
    top: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for key, value in changes.items():
        if value is None:
            continue
        head, dot, rest = key.partition(".")
        if dot:
            nested.setdefault(head, {})[rest] = value
        else:
            top[key] = value
    names = {f.name for f in dataclasses.fields(cfg)}
    for head, sub in nested.items():
        inner = top.get(head, getattr(cfg, head, None)) if head in names else None
        if not dataclasses.is_dataclass(inner):
            raise ConfigError(f"{type(cfg).__name__}: unknown config section {head!r} in {head}.{next(iter(sub))}")
        top[head] = apply_overrides(inner, sub)
    unknown = sorted(set(top) - names)
    if unknown:
        raise ConfigError(f"{type(cfg).__name__}: unknown field(s) {', '.join(unknown)}")
    hints = typing.get_type_hints(type(cfg))
    return dataclasses.replace(cfg, **{k: _coerce(hints[k], v) for k, v in top.items()})


def override(cfg: C, **changes: Any) -> C:
    """`apply_overrides` with keyword arguments (top-level fields)."""
    return apply_overrides(cfg, changes)


def merge_overrides(sets: dict[str, Any], flags: dict[str, Any]) -> dict[str, Any]:
    """`--set` values and flag values in one mapping; unset flags (None) do not count. A field set
    both ways is refused rather than silently resolved one way or the other."""
    given = {k: v for k, v in flags.items() if v is not None}
    both = sorted(set(given) & set(sets))
    if both:
        raise ConfigError(f"--set {both[0]}=... and the flag for {both[0]} both set it; give one of them")
    return {**sets, **given}


def check_sets(items: list[str], cls: type) -> dict[str, Any]:
    """`--set` items parsed, with every key naming a field of `cls` (nested through dataclass fields)."""
    sets = parse_sets(items)
    for key in sets:
        owner: Any = cls
        for part in key.split("."):
            fields = {f.name: f for f in dataclasses.fields(owner)} if dataclasses.is_dataclass(owner) else {}
            if part not in fields:
                raise ConfigError(f"--set {key}: no such config field; --dry-run prints them all")
            owner = typing.get_type_hints(owner)[part]
        if dataclasses.is_dataclass(owner):
            first = dataclasses.fields(owner)[0].name
            raise ConfigError(f"--set {key}: a config section; set its fields, e.g. {key}.{first}")
        if not _has_type(owner, sets[key]):
            raise ConfigError(f"--set {key}={json.dumps(sets[key])}: expected {_type_name(owner)}")
    return sets


def _has_type(hint: Any, value: Any) -> bool:
    """Whether a JSON value fits a config field typed `hint` (the ranges are the dataclass's to check)."""
    if hint is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if hint is int:
        return isinstance(value, int)
    if hint is float:
        return isinstance(value, (int, float))
    if hint is str:
        return isinstance(value, str)
    if typing.get_origin(hint) is tuple:
        (item, *_) = typing.get_args(hint)
        return isinstance(value, list) and all(_has_type(item, v) for v in value)
    return True


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is tuple:
        return "a list of integers, e.g. [1,2,2]"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))


def save_json(cfg: Any, path: Path) -> None:
    """Write a config as JSON atomically (temporary name, then rename)."""
    from cfgdiff.files import write_json

    write_json(Path(path), to_dict(cfg))


def check_range(name: str, value: float, lo: float | None = None, hi: float | None = None) -> None:
    """Raise ConfigError unless lo <= value <= hi and value is finite."""
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(f"{name} must be in [{lo}, {hi}], got {value}")


PREDICTIONS = ("eps", "v")


@dataclasses.dataclass(frozen=True)
class DiffusionConfig:
    """The forward process and training objective of Sec. 2 (paper defaults)."""

    lam_min: float = -20.0  # λ_min: log-SNR at the noisy end
    lam_max: float = 20.0  # λ_max: log-SNR at the clean end
    p_uncond: float = 0.1  # probability of replacing the label by ∅ during training (Sec. 3.2)
    # What the network outputs: "eps" (ε, the paper's Eq. 5), or "v" = α ε − σ x (Salimans & Ho 2022,
    # Sec. 4), which distilled students use: x̂ = α z − σ v stays exact where α → 0 and ε cannot give it.
    prediction: str = "eps"

    def __post_init__(self) -> None:
        if self.prediction not in PREDICTIONS:
            raise ConfigError(f"diffusion.prediction must be one of {', '.join(PREDICTIONS)}, got {self.prediction!r}")
        check_range("lam_min", self.lam_min)
        check_range("lam_max", self.lam_max)
        if not self.lam_min < self.lam_max:
            raise ConfigError(f"lam_min ({self.lam_min}) must be below lam_max ({self.lam_max})")
        check_range("p_uncond", self.p_uncond, 0.0, 1.0)


# The built-in sampler and λ-grid names, for parse-time checks and completions without importing torch
# (the grids' registry is cfgdiff.diffusion.grids.GRIDS; tests/sampling/test_sample_samplers.py checks
# that the lists agree).
BUILTIN_SAMPLERS = tuple(BUILTIN)  # declared once, in cfgdiff.diffusion.sampler_registry
GRID_NAMES = ("paper", "linear", "edm")


def sampler_names() -> list[str]:
    """The built-in samplers, then the names in the `cfgdiff.samplers` entry-point group (not loaded)."""
    from importlib.metadata import entry_points

    return [*BUILTIN_SAMPLERS, *sorted(ep.name for ep in entry_points(group="cfgdiff.samplers")
                                       if ep.name not in BUILTIN_SAMPLERS)]


def _known(kind: str, name: str, names: list[str] | tuple[str, ...]) -> str:
    if name not in names:
        raise ConfigError(f"unknown {kind} {name!r}; choose one of {', '.join(names)}")
    return name


def check_sampler_name(name: str) -> str:
    """The rule for `--sampler`: a built-in or an installed plugin's name (the entry points are only
    listed for a name that is not built in). Returns name."""
    return name if name in BUILTIN_SAMPLERS else _known("sampler", name, sampler_names())


def check_grid_name(name: str) -> str:
    """The rule for `--grid` (the λ grid). Returns name."""
    return _known("grid", name, GRID_NAMES)


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """How samples are drawn: a sampler on a λ grid, with guidance (Eq. 6) and its variants.

    steps: T, the number of λ values λ_min = λ_1 < … < λ_T = λ_max. Network evaluations per sample
        follow from the sampler, w and the interval (`cfgdiff.diffusion.sampler.nfe_per_sample`):
        T for ancestral/ddim/dpmpp-2m/dpmpp-2m-sde and 2T − 1 for heun, doubled where guidance applies.
    w: the guidance weight of Eq. 6; w = 0 is the plain conditional model. Other tools' "guidance
        scale" s is 1 + w.
    clip_x: clip x̂ to [−1, 1] inside every step (static thresholding), before it enters the update.
    sampler: a name in the sampler registry (built in: ancestral, ddim, dpmpp-2m, heun, dpmpp-2m-sde,
        distill-sde; more from the `cfgdiff.samplers` entry-point group).
    sampler_settings: that sampler's own settings as (name, value) pairs (`sampler_registry`: ancestral's
        v of Eq. 4, paper 0.3; ddim's η of Song et al. Eq. 16, 0 = deterministic); the ones left out take
        their declared defaults, so the config always holds every one; `setting(name)` reads one.
    grid: the λ grid: paper (uniform in u of p(λ)), linear (uniform in λ) or edm (Karras ρ = 7).
    guidance_interval: (LO, HI) in λ; w applies only where LO <= λ <= HI. None: everywhere.
    rescale: CFG-rescale's φ in [0, 1] (Lin et al. 2024); 0 is off.
    threshold: dynamic thresholding of x̂ at this percentile of |x̂| (Saharia et al. 2022; DPM-Solver++
        uses 0.995), in (0, 1]; 0 is off, and then clip_x applies. Every sampler, inside each step.
    guidance: the guidance method (`cfgdiff.diffusion.methods`: cfg = Eq. 6, apg, cfgpp, or a plugin's).
    guidance_settings: that method's settings as (name, value) pairs; the ones left out take their
        declared defaults, so the config always holds every one (what a sweep row's key compares).
    """

    steps: int = 256
    w: float = 0.0
    clip_x: bool = True
    sampler: str = "ancestral"
    sampler_settings: tuple[tuple[str, float], ...] = ()
    grid: str = "paper"
    guidance_interval: tuple[float, float] | None = None
    rescale: float = 0.0
    threshold: float = 0.0
    guidance: str = "cfg"
    guidance_settings: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        from cfgdiff.diffusion.methods import get_method  # torch-free

        if not isinstance(self.steps, int) or self.steps < 2:
            raise ConfigError(f"steps (T) must be an integer >= 2, got {self.steps!r}")
        check_w(self.w)
        check_range("rescale", self.rescale, 0.0, 1.0)
        check_range("threshold", self.threshold, 0.0, 1.0)
        for name in ("sampler", "grid"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(f"{name} must be a non-empty name, got {getattr(self, name)!r}")
        if self.guidance_interval is not None:
            interval = self.guidance_interval
            if not isinstance(interval, (tuple, list)) or len(interval) != 2:
                raise ConfigError(f"guidance_interval must be (LO, HI) in λ, got {interval!r}")
            lo, hi = interval
            check_range("guidance_interval LO", lo)
            check_range("guidance_interval HI", hi)
            if not lo < hi:
                raise ConfigError(f"guidance_interval LO ({lo}) must be below HI ({hi})")
            object.__setattr__(self, "guidance_interval", (float(lo), float(hi)))  # JSON gives a list
        if not isinstance(self.guidance, str):
            raise ConfigError(f"guidance must be a method name, got {self.guidance!r}")
        method = get_method(self.guidance)
        try:
            given = dict(self.guidance_settings)  # JSON gives a list of [name, value] pairs
        except (TypeError, ValueError):
            raise ConfigError(f"guidance_settings must be (name, value) pairs, got {self.guidance_settings!r}") from None
        object.__setattr__(self, "guidance_settings", method.resolve(given))
        method.check_w(self.w)
        object.__setattr__(self, "sampler_settings", get_sampler(self.sampler).resolve(self.sampler_settings))

    def setting(self, name: str) -> float:
        """The value of the sampler's own setting `name` (a solver reads its settings here)."""
        for key, value in self.sampler_settings:
            if key == name:
                return value
        return get_sampler(self.sampler).setting(name).default  # raises: the sampler has no such setting


# ---------------------------------------------------------------------------------------------
# The network and the training run (cfgdiff.nn, cfgdiff.train)
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """ADM's U-Net (Dhariwal & Nichol 2021, guided-diffusion `unet.py`), class-conditional.

    resolution: input size S (S×S); `attention_resolutions` are feature-map sizes in pixels (ADM's
        convention: 32, 16, 8 at 64²), sizes that no level has are ignored, as in ADM.
    num_classes: K; the label table has K + 1 rows, the last one for the null label ∅.
    model_channels · channel_mult[i]: the width of level i (a multiple of norm_groups).
    norm_groups: GroupNorm's groups (ADM: 32). A group of one channel is instance norm, which erases
        each channel's per-image mean, and with it the network's way to output ε's per-image mean
        (measured on the tiny preset at width 32: about 60% of its ε error at λ ≤ −4 after 60 kimg,
        seen as colour shifts in the samples).
    resblock_updown: BigGAN-style residual blocks resample between levels (else a strided conv
        down and nearest + conv up, as in DDPM).
    emb_mult: the embedding width as a multiple of model_channels (ADM: 4).
    w_embedding: the network also takes the guidance weight w (a guided-distillation student, Meng et
        al. 2023): c_w = W_SCALE·w through the noise level's sinusoidal embedding and an MLP whose last
        layer starts at zero, added to the embedding (cfgdiff.nn.unet).
    """

    resolution: int = 64
    in_channels: int = 3
    out_channels: int = 3
    model_channels: int = 192
    channel_mult: tuple[int, ...] = (1, 2, 3, 4)
    num_res_blocks: int = 3
    attention_resolutions: tuple[int, ...] = (32, 16, 8)
    head_channels: int = 64
    dropout: float = 0.1
    num_classes: int = 1000
    resblock_updown: bool = True
    emb_mult: int = 4
    norm_groups: int = 32
    w_embedding: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.w_embedding, bool):
            raise ConfigError(f"model.w_embedding must be true or false, got {self.w_embedding!r}")
        for name in ("resolution", "in_channels", "out_channels", "model_channels", "num_res_blocks",
                     "head_channels", "emb_mult", "norm_groups"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"model.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.num_classes, int) or self.num_classes < 0:
            raise ConfigError(f"model.num_classes must be an integer >= 0, got {self.num_classes!r}")
        if not self.channel_mult or any(not isinstance(m, int) or m < 1 for m in self.channel_mult):
            raise ConfigError(f"model.channel_mult must be positive integers, got {self.channel_mult!r}")
        widths = [self.model_channels * m for m in self.channel_mult]
        if any(w % self.norm_groups for w in widths):
            raise ConfigError(f"model widths {widths} must be multiples of norm_groups ({self.norm_groups})")
        if any(w % self.head_channels for w in widths):
            raise ConfigError(f"model widths {widths} must be multiples of head_channels ({self.head_channels})")
        if self.model_channels % 2:
            raise ConfigError("model.model_channels must be even (sinusoidal embedding)")
        if self.resolution % 2 ** (len(self.channel_mult) - 1):
            raise ConfigError(
                f"model.resolution {self.resolution} is not divisible by 2^{len(self.channel_mult) - 1} "
                f"({len(self.channel_mult)} levels)"
            )
        check_range("model.dropout", self.dropout, 0.0, 0.99)
        for name, most in MODEL_MAXIMA.items():  # before any network is built: a damaged or hostile config
            value = getattr(self, name)           # (from --set or a checkpoint) is one line, not 17 TB
            if (max(value) if isinstance(value, tuple) and value else value) > most:
                raise ConfigError(f"model.{name} = {value!r} is above its bound {most}")
        if len(self.channel_mult) > 8:
            raise ConfigError(f"model.channel_mult has {len(self.channel_mult)} levels; at most 8")
        if self.approx_params() > MAX_PARAMS:
            raise ConfigError(f"the model config asks for about {self.approx_params() / 1e9:.3g} billion parameters "
                              f"({self.approx_params() * 4 / 2**30:,.0f} GiB in float32); at most "
                              f"{MAX_PARAMS / 1e9:g} billion")

    def approx_params(self) -> int:
        """The residual blocks' convolutions (two 3×3 per block, 2·num_res_blocks + 1 blocks a level):
        within a factor 2 of the real count (adm64: 139M of 296M), and computed without building."""
        return sum((2 * self.num_res_blocks + 1) * 18 * (self.model_channels * m) ** 2 for m in self.channel_mult)


MODEL_MAXIMA = {"resolution": 1024, "in_channels": 64, "out_channels": 64, "model_channels": 4096,
                "num_res_blocks": 64, "head_channels": 4096, "emb_mult": 64, "norm_groups": 4096,
                "num_classes": 1_000_000, "channel_mult": 64}
MAX_PARAMS = 10_000_000_000  # the estimate above; about 20 billion real parameters, 80 GB in float32


DISTILL_STAGES = ("guided", "progressive")


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """A guided-distillation run (Meng et al. 2023; cfgdiff.diffusion.distill): what its student learns.

    stage: "guided" (stage 1: one w-conditioned network learns the teacher's Eq. 6) or "progressive"
        (stage 2: one deterministic DDIM step of the student matches two of its teacher's).
    teacher: the teacher's weights file (a trained run's EMA file, or the previous stage's), as given;
        teacher_sha256: its SHA-256, checked on resume.
    w_min, w_max: the guidance weights the student learns, w ~ U[w_min, w_max]; sampling refuses others.
    steps, grid: the student's λ grid (progressive: steps points of `grid`; its teacher's grid has
        2·steps − 1 points of the same family). Guided: the grid the student is sampled on by default.
    """

    stage: str = "guided"
    teacher: str = ""
    teacher_sha256: str = ""
    w_min: float = 0.0
    w_max: float = 4.0
    steps: int = 64
    grid: str = "paper"

    def __post_init__(self) -> None:
        if self.stage not in DISTILL_STAGES:
            raise ConfigError(f"distill.stage must be one of {', '.join(DISTILL_STAGES)}, got {self.stage!r}")
        check_w(self.w_min)
        check_w(self.w_max)
        if not self.w_min <= self.w_max:
            raise ConfigError(f"the w range {self.w_min:g}:{self.w_max:g} is empty (LO must be <= HI)")
        if not isinstance(self.steps, int) or self.steps < 2:
            raise ConfigError(f"distill.steps must be an integer >= 2, got {self.steps!r}")
        check_grid_name(self.grid)

    def check_w(self, w: float) -> None:
        """The one rule for w on a student: inside the range it learned."""
        if not self.w_min <= w <= self.w_max:
            raise ConfigError(f"w = {w:g} is outside this distilled student's range {self.w_min:g}:{self.w_max:g} "
                              "(it learned only those); sample its teacher for other w")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run: the network, the objective, the data, the optimiser and the schedule.

    Durations and intervals are in thousands of training images (kimg, as EDM). `batch` is the
    global batch; `batch_per_device` (0 = batch / world size) sets gradient accumulation. A rerun
    of the same command resumes; only the fields in `RESUMABLE_CHANGES` may differ on a rerun.
    """

    preset: str = "adm64"
    model: ModelConfig = ModelConfig()
    diffusion: DiffusionConfig = DiffusionConfig()
    dataset: str = ""
    run_dir: str = ""
    kimg: float = 540_000 * 2048 / 1000  # ADM-64: 540K iterations of batch 2048
    batch: int = 2048
    batch_per_device: int = 0
    lr: float = 3e-4
    lr_warmup_kimg: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip: float = 0.0  # max global gradient norm; 0 disables (ADM does not clip)
    ema_decay: float = 0.9999  # per optimiser step
    ema_warmup: bool = False  # decay min(ema_decay, (1+t)/(10+t)) at step t, for short runs
    flip: bool = True
    seed: int = 0
    tick_kimg: float = 50.0  # progress line and stats.jsonl row
    snapshot_kimg: float = 5000.0  # training checkpoint + EMA file
    grid_kimg: float = 5000.0  # sample grid PNG
    grid_images: int = 16  # fixed seeds 0..n-1 with classes seed mod K, at w = 0 and w = grid_w
    grid_w: float = 3.0
    grid_steps: int = 32
    grid_sampler: str = "ancestral"  # the training grids' sampler (a name in the sampler registry)
    grid_schedule: str = "paper"  # the training grids' λ grid: paper, linear or edm
    keep: int = 3  # training checkpoints (and EMA files) kept
    workers: int = 4  # data-loading processes per rank
    amp: bool = True  # bf16 autocast where the device has native bf16 (CUDA, AVX512-BF16 CPUs)
    compile: bool = False
    distill: DistillConfig | None = None  # a guided-distillation student (`cfgdiff distill`); None: Eq. 5

    def __post_init__(self) -> None:
        if self.model.w_embedding != (self.distill is not None):  # only a distillation objective feeds w
            raise ConfigError("model.w_embedding makes a guided-distillation student's network, which train "
                              "cannot train (its objective has no w to feed); `cfgdiff distill` trains it"
                              if self.model.w_embedding else "a distillation run needs model.w_embedding")
        if self.distill is not None and not isinstance(self.distill, DistillConfig):
            raise ConfigError("distill must be a DistillConfig")
        if self.diffusion.prediction != "eps" and self.distill is None:
            raise ConfigError(f"diffusion.prediction {self.diffusion.prediction!r} is for distilled students; "
                              "train's objective (Eq. 5) trains ε")
        for name in ("batch", "grid_images", "grid_steps", "keep"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in ("batch_per_device", "workers", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be an integer >= 0, got {value!r}")
        if self.batch_per_device and self.batch % self.batch_per_device:
            raise ConfigError(f"batch ({self.batch}) must be a multiple of batch_per_device ({self.batch_per_device})")
        for name in ("kimg", "tick_kimg", "snapshot_kimg", "grid_kimg", "lr"):
            value = getattr(self, name)
            check_range(name, value, 0.0)
            if value <= 0:
                raise ConfigError(f"{name} must be positive, got {value}")
        check_range("lr_warmup_kimg", self.lr_warmup_kimg, 0.0)
        check_range("beta1", self.beta1, 0.0, 0.9999)
        check_range("beta2", self.beta2, 0.0, 0.999999)
        check_range("adam_eps", self.adam_eps, 0.0)
        check_range("weight_decay", self.weight_decay, 0.0)
        check_range("grad_clip", self.grad_clip, 0.0)
        check_range("ema_decay", self.ema_decay, 0.0, 0.999999)
        check_range("grid_w", self.grid_w, 0.0)
        check_sampler_name(self.grid_sampler)
        check_grid_name(self.grid_schedule)
        if not isinstance(self.model, ModelConfig) or not isinstance(self.diffusion, DiffusionConfig):
            raise ConfigError("model and diffusion must be ModelConfig and DiffusionConfig")


PAPER_SAMPLING = ("ancestral", 256, "paper")  # the paper's sampler (Eq. 4), T and λ grid


def sampling_defaults(run: TrainConfig | None) -> tuple[str, int, str]:
    """(sampler, T, grid) that `sample` and `sweep` use when not given: the paper's, or for a distilled
    student deterministic DDIM on the grid it was distilled for (one evaluation a step)."""
    if run is not None and run.distill is not None:
        return "ddim", run.distill.steps, run.distill.grid
    return PAPER_SAMPLING


# Fields a rerun may change without starting a new run: how long, how often, and how it is computed.
RESUMABLE_CHANGES = frozenset(
    {"kimg", "tick_kimg", "snapshot_kimg", "grid_kimg", "grid_images", "grid_w", "grid_steps", "keep", "workers",
     "compile", "grid_sampler", "grid_schedule"}
)

# Named presets. Each is a recipe: a network and the hyperparameters it is trained with.
TRAIN_PRESETS: dict[str, TrainConfig] = {
    # The paper's model and recipe = ADM 64×64 (ADM Table 11 and guided-diffusion's README flags):
    # 192 channels, mult 1,2,3,4, 3 blocks, attention at 32/16/8 with 64-channel heads, BigGAN
    # up/down, scale-shift norm, dropout 0.1; batch 2048, lr 3e-4 (Adam, constant), EMA 0.9999, 540K
    # iterations. Output: ε only (3 channels; ADM's learned variance is not used by the paper).
    "adm64": TrainConfig(preset="adm64"),
    # DDPM-CIFAR10 scale (Ho et al. 2020: 128 channels, mult 1,2,2,2, 2 blocks, attention at 16,
    # dropout 0.1, batch 128, lr 2e-4 with 5000 warm-up steps, clip 1, EMA 0.9999, 800K steps) in
    # ADM's blocks.
    "cifar32": TrainConfig(
        preset="cifar32",
        model=ModelConfig(resolution=32, model_channels=128, channel_mult=(1, 2, 2, 2), num_res_blocks=2,
                          attention_resolutions=(16,), head_channels=64, dropout=0.1, num_classes=10,
                          resblock_updown=False),
        kimg=800_000 * 128 / 1000, batch=128, lr=2e-4, lr_warmup_kimg=5000 * 128 / 1000, grad_clip=1.0,
        tick_kimg=10.0, snapshot_kimg=1000.0, grid_kimg=1000.0,
    ),
    # Small enough to train usefully on 2 CPU cores (≤ 2M parameters).
    "tiny": TrainConfig(
        preset="tiny",
        model=ModelConfig(resolution=32, model_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1,
                          attention_resolutions=(8,), head_channels=32, dropout=0.0, num_classes=10,
                          resblock_updown=True, norm_groups=8),  # 4 channels a group, as cifar32's 128/32
        kimg=200.0, batch=32, lr=1e-3, lr_warmup_kimg=1.0, grad_clip=1.0, ema_decay=0.999, ema_warmup=True,
        tick_kimg=1.0, snapshot_kimg=10.0, grid_kimg=10.0, grid_steps=32, workers=0,
    ),
}


def train_preset(name: str) -> TrainConfig:
    """The named training preset; ConfigError naming the known ones."""
    if name not in TRAIN_PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(TRAIN_PRESETS)}")
    return TRAIN_PRESETS[name]


# `cfgdiff train` without --preset picks the preset by the dataset's resolution.
PRESET_BY_RESOLUTION = {64: "adm64", 32: "cifar32"}


# ---------------------------------------------------------------------------------------------
# The other commands: prepare, sample, sweep, demo
# ---------------------------------------------------------------------------------------------

RESIZE_METHODS = ("area", "center-crop-adm", "box")  # implemented in data/resize.py
MIN_SIZE, MAX_SIZE = 8, 512  # output side of `prepare`, in pixels


def check_size(size: int) -> int:
    """The rule for a dataset's side S in pixels. Returns size."""
    if isinstance(size, bool) or not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE:
        raise ConfigError(f"size must be an integer in [{MIN_SIZE}, {MAX_SIZE}], got {size!r}")
    return size


def check_resize(method: str) -> str:
    """The rule for a resize method name. Returns method."""
    if method not in RESIZE_METHODS:
        raise ConfigError(f"resize must be one of {', '.join(RESIZE_METHODS)}, got {method!r}")
    return method


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
    """What a dataset file is made of (the output path and worker count are not part of it).

    source: a folder, archive or npz path, or `builtin:NAME`.
    size: output side S in pixels. resize: `area` (the paper's 64×64 "area-downsampled ImageNet")
        or `center-crop-adm` (ADM's and EDM2's training crop).
    split: the split folder to read (default: the only one, or `train`).
    limit: at most this many images, spread evenly over the classes (builtin: the count).
    classes: only the first K classes in label order.
    draft: decode JPEGs at a reduced DCT scale first (faster, not bit-exact; docs/prepare.md).
    class_map: a map_clsloc.txt / synset_words.txt file (default: looked for beside the source).
    seed: the random seed of builtin sources.
    """

    source: str = ""
    size: int = 64
    resize: str = "area"
    split: str | None = None
    limit: int | None = None
    classes: int | None = None
    draft: bool = False
    class_map: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        check_size(self.size)
        check_resize(self.resize)
        for name in ("limit", "classes"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.split == "":
            raise ConfigError("split must be a folder name (omit it to use the default)")
        check_range("seed", self.seed, 0)


PREPARE_PRESETS = {
    "paper": PrepareConfig(size=64, resize="area"),  # the paper's 64×64 area-downsampled ImageNet
    "adm": PrepareConfig(size=64, resize="center-crop-adm"),  # ADM / EDM2 training data
    "demo": PrepareConfig(source="builtin:shapes", size=32),  # the built-in demo set
}


def prepare_preset(preset: str | None, source: str) -> PrepareConfig:
    """The named preset (default: `demo` for builtin sources, `paper` otherwise) for `source`."""
    name = preset or ("demo" if source.startswith("builtin:") else "paper")
    if name not in PREPARE_PRESETS:
        raise ConfigError(f"unknown preset '{name}' (known: {', '.join(PREPARE_PRESETS)})")
    return dataclasses.replace(PREPARE_PRESETS[name], source=source)


def _check_positive(cfg: Any, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")


SamplerGiven = tuple[tuple[str, str, Any], ...]  # (sampler, setting, value or a tuple of sweep values) as given


def check_sampler_given(given: SamplerGiven, chosen: tuple[str, ...] | list[str]) -> None:
    """A sampler setting's flag given for a sampler the command does not use is an error, not silently
    dropped (`--eta` with `--sampler ancestral`)."""
    for sampler, name, _ in given:
        if sampler not in chosen:
            flag = get_sampler(sampler).setting(name).option(sampler)
            raise ConfigError(f"{flag} applies to --sampler {sampler}, and this command uses "
                              f"--sampler {','.join(chosen)}")


def sampler_settings_of(given: SamplerGiven, sampler: str) -> dict[str, Any]:
    """{setting: value} of `sampler` among the given ones."""
    return {name: value for owner, name, value in given if owner == sampler}


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    """`cfgdiff sample`: which model, the sampler, which seeds and labels, and where to.

    seeds: ranges as `--seeds` takes them (default 0..n-1); the first n are used.
    classes: a comma list of class indices to cycle through (excludes `balanced`).
    out: an .npz file, or a folder (an existing one, or a path ending in "/"): then
        <out>/samples.npz and the PNG folder <out>/png/ (see `out_paths`).
    sampler, grid, guidance_interval ("LO:HI"), rescale, threshold: as in SamplerConfig.
    sampler_given: the sampler settings given, as (sampler, setting, value): each must be the chosen
        sampler's (the flags of every sampler's settings: `cfgdiff.cli.methods`); the rest take defaults.
    guide: a run folder or checkpoint whose network replaces the ∅ pass (autoguidance).
    guidance, guidance_settings: the guidance method and its settings, as in SamplerConfig.
    preview: a PNG grid of the first 64 samples.
    """

    checkpoint: Path | None
    w: float
    n: int
    steps: int | None  # None: the run's default (`sampling_defaults`), as sampler and grid
    out: Path
    seeds: str | None = None
    balanced: bool = False
    classes: str | None = None
    batch: int = 64
    shard_size: int = 1000
    preview: Path | None = None
    clip: bool = True
    force: bool = False
    dry_run: bool = False
    sampler: str | None = None
    grid: str | None = None
    sampler_given: SamplerGiven = ()
    guidance_interval: str | None = None
    guide: Path | None = None
    rescale: float = 0.0
    threshold: float = 0.0
    guidance: str = "cfg"
    guidance_settings: tuple[tuple[str, float], ...] = ()
    out_is_folder: bool = False  # set from the command line's trailing "/" (a Path drops it)

    def __post_init__(self) -> None:
        if self.sampler is not None:
            check_sampler_name(self.sampler)
        if self.grid is not None:
            check_grid_name(self.grid)
        try:  # each given setting is its sampler's, in its bounds (JSON gives lists)
            given = tuple((str(o), str(k), get_sampler(str(o)).setting(str(k)).check(str(o), v))
                          for o, k, v in self.sampler_given)
        except (TypeError, ValueError):
            raise ConfigError(f"sampler_given must be (sampler, setting, value), got {self.sampler_given!r}") from None
        object.__setattr__(self, "sampler_given", given)
        self.sampler_config()
        _check_positive(self, "batch", "shard_size")
        seeds_for(self.seeds, self.n)
        label_mode(self.balanced, self.classes)

    def sampler_config(self, run: TrainConfig | None = None) -> SamplerConfig:
        """The sampler settings; those left unset take `run`'s defaults (`sampling_defaults`). A sampler
        setting given for another sampler is refused once the sampler is known (given, or the run's)."""
        sampler, steps, grid = sampling_defaults(run)
        sampler = self.sampler or sampler
        known = self.sampler is not None or run is not None
        if known:
            check_sampler_given(self.sampler_given, [sampler])
        interval = parse_interval(self.guidance_interval, "--guidance-interval") if self.guidance_interval else None
        return SamplerConfig(steps=self.steps or steps, w=self.w, clip_x=self.clip, sampler=sampler,
                             sampler_settings=sampler_settings_of(self.sampler_given, sampler) if known else {},
                             grid=self.grid or grid,
                             guidance_interval=interval, rescale=self.rescale,
                             threshold=self.threshold, guidance=self.guidance,
                             guidance_settings=self.guidance_settings)


def parse_axis(text: str, what: str) -> list[str]:
    """A sweep axis as `--sampler`, `--grid` take it: one value or a comma list, kept in the order given."""
    items = [p.strip() for p in str(text).split(",") if p.strip()]
    if not items:
        raise ConfigError(f"{what} {text!r}: no values")
    if len(items) != len(set(items)):
        raise ConfigError(f"{what} {text!r}: a value appears twice")
    return items


def parse_steps_axis(text: str) -> list[int]:
    """`--steps` of sweep: T or a comma list of T values, each an integer >= 2."""
    values = []
    for item in parse_axis(text, "steps"):
        if not item.isdigit() or int(item) < 2:
            raise ConfigError(f"steps {text!r}: {item!r} is not an integer >= 2")
        values.append(int(item))
    return values


def parse_interval_axis(text: str) -> list[tuple[float, float] | None]:
    """`--guidance-interval` of sweep: LO:HI or a comma list of them; `all` is guidance everywhere."""
    from cfgdiff.parse import parse_interval

    return [None if item == "all" else parse_interval(item, "guidance interval")
            for item in parse_axis(text, "guidance interval")]


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """`cfgdiff sweep`: every combination of the axes (sampler, steps, grid, guidance interval, guidance
    method with its settings, w), each sampled with the same seeds and labels and scored against `ref`.

    w: the guidance weights as `--w` takes them (start:stop:step or a comma list).
    samplers, steps, grids, intervals: the other axes, one value or several each.
    guidances: (method, settings) pairs, one per line of the table (`cfgdiff.cli.methods.sweep_choices`
        expands each method's setting axes into them); settings left out take their defaults.
    sampler_given: the samplers' own settings given, as (sampler, setting, values): every combination of
        a sampler's values is one line (like the guidance methods' axes); the rest take their defaults.
    rescale, threshold, clip: sampler settings shared by every row.
    guide: autoguidance (Karras et al. 2024): a run folder or checkpoint whose network replaces the ∅
        pass in every row (then w weighs the main network against the guide).
    out_dir: the sweep folder (default: sweeps/<run>-step<step>).
    metrics: the metrics of every row (default: all that the inputs allow; the rest are n/a with the reason).
    figure_ws: how many w values the Fig. 3 grid shows.
    """

    checkpoint: Path | None
    w: str
    n: int
    samplers: tuple[str, ...] | None = None  # None: the run's default (`sampling_defaults`), as steps, grids
    steps: tuple[int, ...] | None = None
    grids: tuple[str, ...] | None = None
    intervals: tuple[tuple[float, float] | None, ...] = (None,)
    sampler_given: SamplerGiven = ()
    rescale: float = 0.0
    threshold: float = 0.0
    ref: str | None = None
    out_dir: Path | None = None
    seeds: str | None = None
    balanced: bool = False
    batch: int = 64
    inception: str | None = None
    keep_samples: bool = False
    clip: bool = True
    figure_ws: int = 5
    metrics: tuple[str, ...] | None = None  # names in cfgdiff.metrics.registry; None: every one the inputs allow
    dry_run: bool = False
    guidances: tuple[tuple[str, tuple[tuple[str, float], ...]], ...] = (("cfg", ()),)
    guide: Path | None = None

    def __post_init__(self) -> None:
        from cfgdiff.diffusion.methods import get_method  # torch-free

        parse_grid(self.w)
        try:  # JSON gives lists; each entry resolved to every setting, duplicates dropped
            resolved = tuple(dict.fromkeys((str(m), get_method(str(m)).resolve(dict(st))) for m, st in self.guidances))
        except (TypeError, ValueError):
            raise ConfigError(f"guidances must be (method, settings) pairs, got {self.guidances!r}") from None
        object.__setattr__(self, "guidances", resolved)
        try:  # JSON gives lists: (sampler, setting, values) with the values checked and de-duplicated
            given = tuple((str(o), str(k), tuple(dict.fromkeys(get_sampler(str(o)).setting(str(k)).check(str(o), x)
                                                               for x in (v if isinstance(v, (list, tuple)) else (v,)))))
                          for o, k, v in self.sampler_given)
        except (TypeError, ValueError):
            raise ConfigError(f"sampler_given must be (sampler, setting, values), got {self.sampler_given!r}") from None
        object.__setattr__(self, "sampler_given", given)
        if self.samplers is not None:
            check_sampler_given(self.sampler_given, self.samplers)
        for name in ("samplers", "steps", "grids", "intervals", "guidances"):
            if getattr(self, name) is not None and not getattr(self, name):
                raise ConfigError(f"{name}: give at least one value")
        self.combinations()
        _check_positive(self, "batch", "figure_ws")
        seeds_for(self.seeds, self.n)

    def ws(self) -> list[float]:
        return parse_grid(self.w)

    def sampler(self, w: float = 0.0, sampler: tuple[str, tuple[tuple[str, float], ...]] = ("ancestral", ()),
                steps: int = 256, grid: str = "paper", interval: tuple[float, float] | None = None,
                guidance: tuple[str, tuple[tuple[str, float], ...]] = ("cfg", ())) -> SamplerConfig:
        return SamplerConfig(steps=steps, w=w, clip_x=self.clip, sampler=sampler[0], sampler_settings=sampler[1],
                             grid=grid, guidance_interval=interval, rescale=self.rescale, threshold=self.threshold,
                             guidance=guidance[0], guidance_settings=guidance[1])

    def sampler_lines(self, names: tuple[str, ...]) -> list[tuple[str, tuple[tuple[str, float], ...]]]:
        """(sampler, settings) per sampler of `names` and combination of its given setting values."""
        out = []
        for name in names:
            axes = [(k, v) for o, k, v in self.sampler_given if o == name]
            for combo in itertools.product(*(values for _, values in axes)):
                out.append((name, get_sampler(name).resolve({k: x for (k, _), x in zip(axes, combo)})))
        return out

    def combinations(self) -> list[SamplerConfig]:
        """One SamplerConfig per row of the sweep, in table order (sampler, steps, grid, interval, guidance, w);
        unset axes take the paper's defaults (`with_defaults` gives a run's own)."""
        sampler, steps, grid = sampling_defaults(None)
        return [self.sampler(w, s, t, g, i, m) for s in self.sampler_lines(self.samplers or (sampler,))
                for t in self.steps or (steps,)
                for g in self.grids or (grid,) for i in self.intervals for m in self.guidances for w in self.ws()]

    def with_defaults(self, run: TrainConfig | None) -> SweepConfig:
        """This sweep with its unset axes (None) set to `run`'s defaults (`sampling_defaults`)."""
        sampler, steps, grid = sampling_defaults(run)
        check_sampler_given(self.sampler_given, self.samplers or (sampler,))
        return dataclasses.replace(self, samplers=self.samplers or (sampler,), steps=self.steps or (steps,),
                                   grids=self.grids or (grid,))


@dataclasses.dataclass(frozen=True)
class ScoreConfig:
    """What `cfgdiff score` does.

    metrics: None = every metric the inputs allow (unavailable ones are reported, not fatal); an
        explicit tuple makes each requested metric mandatory.
    ref: None = the training dataset the samples' metadata (`<samples>.json`, written by `sample`) records,
        if it exists; else no reference.
    results: the results JSON (default: `<samples>.score.json` beside the samples).
    force: score fewer than 2 samples (every metric then says why it is n/a), or replace an existing
        --results/--save-stats file that cfgdiff did not write (never an input).
    cache_dir: cache root for weights lookups and reference statistics (default: XDG cache).
    ref_resize: None = refuse reference images of another size than the samples'; "area" = area-resize
        them to the samples' size first (as `prepare` does); "none" = compare them as they are.
    """

    samples: str
    ref: str | None = None
    inception: str | None = None
    batch: int = 64
    save_stats: str | None = None
    metrics: tuple[str, ...] | None = None
    fid_method: str = "eigh"
    results: str | None = None
    cache_dir: str | None = None
    force: bool = False
    ref_resize: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.batch, int) or self.batch < 1:
            raise ConfigError(f"batch must be a positive integer, got {self.batch!r}")
        if self.ref_resize not in (None, "area", "none"):  # cfgdiff.metrics.sources.REF_RESIZES
            raise ConfigError(f"ref_resize must be area or none, got {self.ref_resize!r}")
        from cfgdiff.metrics.registry import FID_METHODS, parse_metrics  # standard library only

        if self.fid_method not in FID_METHODS:
            raise ConfigError(f"fid_method must be one of {', '.join(FID_METHODS)}, got {self.fid_method!r}")
        if self.metrics is not None:
            object.__setattr__(self, "metrics", parse_metrics(self.metrics))

    def results_path(self) -> Path:
        """--results, else `<samples>.score.json` beside the samples."""
        if self.results is not None:
            return Path(self.results)
        samples = Path(self.samples)
        return samples.with_name((samples.stem if samples.is_file() else samples.name) + ".score.json")


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo; the defaults fit in about 10 minutes on 2 CPU cores."""

    out_dir: str = "demo"
    size: int = 16  # pixels; the shapes stay recognisable at 16×16 and the tiny U-Net is 4× cheaper than at 32
    train_images: int = 20_000
    reference_images: int = 500
    kimg: float = 60.0  # training budget, thousands of images (~5 min at ~200 img/s on 2 cores)
    w: str = "0,1,2,4"
    n: int = 200  # samples per w (20 per class); Inception on 2 CPU cores scores ~8 img/s
    steps: int = 32  # T
    sampler: str = "ancestral"  # the documented results (docs, README) were measured with these three
    grid: str = "paper"
    batch: int = 200

    def __post_init__(self) -> None:
        for name in ("train_images", "reference_images", "n", "steps", "batch"):
            check_range(name, getattr(self, name), 1)
        check_size(self.size)
        check_range("kimg", self.kimg, 0.001)
        parse_grid(self.w)
        SamplerConfig(steps=self.steps, sampler=self.sampler, grid=self.grid)

"""The sweep's files, read and written without torch: rows and their keys, `sweep.jsonl`/`sweep.csv`,
`table.md`, `settings.json`'s format, and the record (`sweep.json`) that lets a finished sweep rerun
without loading the model or Inception (`finished_sweep`). `cfgdiff.sampling.sweep` computes the rows.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import re
import sys
from pathlib import Path
from typing import Any, NamedTuple

from cfgdiff.config import SamplerConfig, SweepConfig
from cfgdiff.diffusion.methods import MethodChoice, get_method
from cfgdiff.diffusion.sampler_registry import get_sampler
from cfgdiff.console import duration
from cfgdiff.errors import ConfigError, OutputError
from cfgdiff.files import Owner, is_ours, write_text
from cfgdiff import layout
from cfgdiff.launch import launched_rank
from cfgdiff.settings import label

# settings.json: 3 = the samplers' own settings in every row's key; 2 = v and η shared by every row (read
# back: its rows take them from settings.json, `legacy_sampler_settings`); 1, unmarked: one sampler and T a folder
FORMAT = 3
PLOTS = ("fid_vs_is.png", "fid_vs_w.png", "fid_vs_nfe.png")
OUTPUTS = ("settings.json", "sweep.jsonl", "sweep.csv", "table.md", *PLOTS, "grid.png", "sweep.json")  # in --out-dir
SHARED = ("clip_x", "rescale", "threshold")  # sampler settings that are the same in every row
LEGACY_SHARED = ("v", "eta")  # format 2's shared settings, now the samplers' own (ancestral's v, ddim's η)
OWNER = Owner("sweep", "sweep")  # every file of a sweep folder, which the sweep claims (cfgdiff.files.claim_folder)
_KEPT = re.compile(r"^samples_.+\.npz(\.json)?$")  # samples a sweep keeps (--keep-samples) and their sidecars


def sweep_writes(name: str) -> bool:
    """Whether a sweep writes a file of this name in its folder."""
    return name in OUTPUTS or bool(_KEPT.match(name))

Pairs = tuple[tuple[str, float], ...]  # settings as (name, value), in declaration order


class Key(NamedTuple):
    """A row's key: every axis, in AXES' order (so keys sort as the table)."""

    sampler: str
    sampler_settings: Pairs
    steps: int
    grid: str
    guidance_interval: tuple[float, ...]
    guidance: str
    guidance_settings: Pairs
    w: float


AXES = Key._fields  # a row's key, in order
# A plot line and table group: every axis of a row but w.
Line = NamedTuple("Line", [(name, kind) for name, kind in Key.__annotations__.items() if name != "w"])  # type: ignore[misc]


def columns() -> list[str]:
    """sweep.csv's columns: the axes, NFE per sample, every metric's result keys
    (`cfgdiff.metrics.registry`), the shared settings."""
    from cfgdiff.metrics import registry

    return [*AXES, "nfe", *registry.result_keys(), "n", "seconds"]


# ---- rows and their keys ------------------------------------------------------------------------------------------
def key_of(cfg: SamplerConfig) -> Key:
    return Key(cfg.sampler, tuple(cfg.sampler_settings), cfg.steps, cfg.grid, tuple(cfg.guidance_interval or ()),
               cfg.guidance, tuple(cfg.guidance_settings), float(cfg.w))


def row_key(row: dict[str, Any], legacy: dict[str, Any] | None = None) -> Key:
    """A row's key; rows written without an axis (a dummy row in a test, a row from before guidance
    methods) get that axis's default (cfg). Settings are resolved as a SamplerConfig resolves them. A
    row from before the samplers' own settings (format 2) takes them from its top-level keys (v), else
    from `legacy` (settings.json's shared v and η, `legacy_sampler_settings`)."""
    d = SamplerConfig()
    guidance = row.get("guidance", d.guidance)
    settings = get_method(guidance).resolve(dict(row.get("guidance_settings") or {}))
    sampler = row.get("sampler", d.sampler)
    own = row.get("sampler_settings")
    if own is None:
        old = {**(legacy or {}), **{k: row[k] for k in LEGACY_SHARED if k in row}}
        own = {s.name: old[s.name] for s in get_sampler(sampler).settings if s.name in old}
    return Key(sampler, get_sampler(sampler).resolve(dict(own)), int(row.get("steps", d.steps)),
               row.get("grid", d.grid), tuple(row.get("guidance_interval") or ()), guidance, settings, float(row["w"]))


def legacy_sampler_settings(recorded: Any) -> dict[str, Any]:
    """The v and η a format-2 settings.json (as read, `recorded_settings`) shared by all its rows; {} else."""
    if isinstance(recorded, dict) and recorded.get("format") == 2 and isinstance(recorded.get("sampler"), dict):
        return {k: recorded["sampler"][k] for k in LEGACY_SHARED if k in recorded["sampler"]}
    return {}


def own_settings_label(sampler: str, settings: Pairs) -> str:
    """The sampler's settings that differ from their defaults (ancestral(v=0.5)), else its name."""
    changed = tuple((k, v) for k, v in settings if v != get_sampler(sampler).setting(k).default)
    return f"{sampler}({label(changed)})" if changed else sampler


def line_of(key: Key) -> Line:
    """The plot line (and table group) a row belongs to: every axis but w."""
    return Line(*key[:-1])


def line_label(line: Line) -> str:
    sampler, own, steps, grid, interval, guidance, settings = line
    extra = ([] if grid == "paper" else [f"{grid} grid"]) + ([f"λ∈[{interval[0]:g}, {interval[1]:g}]"] if interval else [])
    extra += [] if guidance == "cfg" else [MethodChoice(guidance, settings).label()]
    return ", ".join([f"{own_settings_label(sampler, own)}, T={steps}", *extra])


def read_rows(path: Path, legacy: dict[str, Any] | None = None) -> dict[Key, dict[str, Any]]:
    """Rows of sweep.jsonl by key (`legacy`: as `row_key`). A line that is not a row (torn, edited by hand,
    damaged) is dropped with one warning on stderr, so that its row is computed again rather than trusted
    or crashed on."""
    rows: dict[Key, dict[str, Any]] = {}
    if path.exists():
        damaged = 0
        for line in path.read_text(errors="replace").splitlines():
            try:
                row = json.loads(line)
                key = row_key(row, legacy)
                hash(key)  # an axis that is a list or a mapping is damage too
                settings = (*key.sampler_settings, *key.guidance_settings)
                if not all(math.isfinite(x) for x in (key.steps, key.w, *key.guidance_interval, *(v for _, v in settings))):
                    raise ValueError("non-finite axis")
            except (ValueError, KeyError, TypeError, AttributeError, OverflowError, ConfigError):
                damaged += line.strip() != ""
                continue
            rows[key] = row
        if damaged:
            print(f"cfgdiff: warning: {path}: {damaged} damaged row(s) dropped; they will be computed again",
                  file=sys.stderr)
    return rows


def _ordered(rows: dict[Any, dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows.values(), key=row_key)


def write_rows(out_dir: Path, rows: dict[Any, dict[str, Any]]) -> None:
    """sweep.jsonl and sweep.csv in key order, each written to a temporary name then renamed."""
    ordered = _ordered(rows)
    write_text(out_dir / "sweep.jsonl", "".join(json.dumps(r) + "\n" for r in ordered), owner=OWNER)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns(), extrasaction="ignore")
    writer.writeheader()
    for r in ordered:
        interval = r.get("guidance_interval")
        settings = ",".join(f"{k}={v!r}" for k, v in (r.get("guidance_settings") or {}).items())
        own = ",".join(f"{k}={v!r}" for k, v in (r.get("sampler_settings") or {}).items())
        writer.writerow({"guidance": "cfg", **r, "guidance_settings": settings, "sampler_settings": own,
                         "guidance_interval": f"{interval[0]!r}:{interval[1]!r}" if interval else ""})
    write_text(out_dir / "sweep.csv", buf.getvalue(), owner=OWNER)


# ---- what the outputs say about themselves ------------------------------------------------------------------------
def describe(meta: dict[str, Any]) -> str:
    """Two lines naming n, the checkpoint, the reference and the Inception weights (table.md, plot titles)."""
    c, r, i = meta["checkpoint"], meta["reference"], meta["inception"]
    g = meta.get("guide")
    guide = "" if g is None else f"; guide {Path(g['path']).name} (step {g['step']})"
    return (f"n={meta['n']} per row; checkpoint {Path(c['path']).name} (step {c['step']}, "
            f"sha {c['sha256'][:12]}){guide}\nreference {Path(r['path']).name} (sha {r['sha256'][:12]}); "
            f"Inception sha {i['sha256'][:12]}")


def _guide_note(meta: dict[str, Any]) -> str:
    g = meta.get("guide")
    if g is None:
        return ""
    return (f"- guide (autoguidance, in place of the ∅ pass): `{g['path']}` (step {g['step']}, {g['kimg']:g} kimg, "
            f"sha256 `{g['sha256'][:16]}…`)\n")


def markdown_table(rows: dict[Any, dict[str, Any]], meta: dict[str, Any] | None = None) -> str:
    """The paper's Fig. 1 layout, one table per (sampler, steps) (and λ grid, interval where those vary):
    one line per w with NFE, FID and IS (plus KID, unbiased and so the one to read at small n, and
    precision and recall)."""
    out = []
    if meta is not None:
        c = meta["checkpoint"]
        out.append(f"- samples per row: n = {meta['n']} (seeds {meta['seeds']}, labels {meta['labels']}), "
                   f"{_sampler_note(rows)}\n- checkpoint: `{c['path']}` (step {c['step']}, {c['kimg']:g} kimg, "
                   f"sha256 `{c['sha256'][:16]}…`)\n{_guide_note(meta)}- reference: `{meta['reference']['path']}` "
                   f"(sha256 `{meta['reference']['sha256'][:16]}…`)\n- Inception weights: "
                   f"`{meta['inception']['path']}` (sha256 `{meta['inception']['sha256'][:16]}…`)\n")
    groups: dict[Any, list[dict[str, Any]]] = {}
    for r in _ordered(rows):
        groups.setdefault(line_of(row_key(r)), []).append(r)
    for line, members in groups.items():
        lines = [f"### {line_label(line)}\n", "| w | NFE | FID | KID ×10³ | IS | precision | recall |",
                 "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in members:
            is_ = f"{r['is_mean']:.2f} ± {r['is_std']:.2f}" if r.get("is_mean") is not None else "n/a"
            kid = (f"{1e3 * r['kid']:.2f} ± {1e3 * r['kid_std']:.2f}" if r.get("kid") is not None and
                   r.get("kid_std") is not None else _f(None if r.get("kid") is None else 1e3 * r["kid"]))
            lines.append(f"| {r['w']:g} | {r.get('nfe', 'n/a')} | {_f(r.get('fid'))} | {kid} | {is_} | "
                         f"{_f(r.get('precision'), 3)} | {_f(r.get('recall'), 3)} |")
        out.append("\n".join(lines) + "\n")
    return "\n".join(out)


def _sampler_note(rows: dict[Any, dict[str, Any]]) -> str:
    """The declared defaults of the rows' samplers' own settings (a heading names any other value)."""
    names = dict.fromkeys(row_key(r)[0] for r in _ordered(rows))
    parts = [f"{n} {label(get_sampler(n).resolve())}" for n in names if get_sampler(n).settings]
    return f"sampler settings {'; '.join(parts)} unless a heading says otherwise" if parts else "no sampler settings"


def _f(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _recorded_settings(out_dir: Path) -> Any:
    """settings.json of `out_dir` (None if absent or unreadable); a folder of the single-axis format
    (cfgdiff before the sampler axes) is refused here, before anything loads."""
    path = out_dir / "settings.json"
    try:
        old = json.loads(path.read_text()) if path.is_file() else None
    except ValueError:
        return None
    if isinstance(old, dict) and old.get("format") is None:
        raise OutputError(f"{out_dir} holds a sweep from an older cfgdiff (one sampler and T per folder), "
                          "which this version does not extend; choose another --out-dir")
    return old


def default_out_dir(file: Path, step: int | None = None) -> Path | None:
    """sweeps/<run>-step<step>: a sweep per checkpoint. The step comes from the file name (ema-<step>.pt)
    or, for another name, from the loaded checkpoint (None until then)."""
    parsed = layout.step_of(file.name)
    if parsed:
        return Path("sweeps") / f"{file.parent.name}-step{parsed[1]}"
    return None if step is None else Path("sweeps") / f"{file.stem}-step{step}"


def _stat(path: str | Path | None) -> list[Any] | None:
    """An input's identity for the "finished earlier" check: its real path and content key (the key the
    reference cache's memo uses), so a reference folder rewritten in place is never taken as the same."""
    from cfgdiff.metrics.cache import content_key

    try:
        return None if not path else [str(Path(path).resolve()), content_key(path)]
    except OSError:
        return None


def fingerprint(req: SweepConfig, file: Path, ref: str | None) -> dict[str, Any]:
    """What a finished sweep must match to be reused without loading anything: the request's shared
    settings and the identity (`_stat`: real path and content key) of the checkpoint file, the reference
    and the autoguidance guide's weights file."""
    shared = {k: getattr(req, k) for k in ("n", "seeds", "balanced", "sampler_given", "rescale", "threshold", "clip",
                                            "inception", "keep_samples", "figure_ws", "metrics")}
    # the guide's weights file where there is one (absent unguided: the sweeps written before stay finished)
    guide = {} if req.guide is None else {"guide": _stat(weights_file_guess(req.guide))}
    return {**shared, "checkpoint": _stat(file), "ref": req.ref, "reference": _stat(ref), **guide}


def finished(out_dir: Path, req: SweepConfig, file: Path) -> dict[str, Any] | None:
    """The recorded summary (sweep.json) when every row of `req` exists and every output is the one this
    sweep wrote for these rows; None when anything is to do."""
    summary_file = out_dir / "sweep.json"
    if not (summary_file.is_file() and all(is_ours(out_dir / name, OWNER) for name in OUTPUTS)):
        return None
    try:
        summary = json.loads(summary_file.read_text())
        legacy = legacy_sampler_settings(_recorded_settings(out_dir))
        rows = read_rows(out_dir / "sweep.jsonl", legacy)
        ref = req.ref or summary["meta"]["reference"]["path"]
        recorded = sorted(tuple(row_key(r, legacy)) for r in summary["rows"])
    except (ValueError, KeyError, TypeError, ConfigError):
        return None
    if summary.get("request") != json.loads(json.dumps(fingerprint(req, file, ref))):
        return None
    if recorded != sorted(rows) or not {key_of(c) for c in req.combinations()} <= set(rows):
        return None
    return summary


@dataclasses.dataclass
class SweepResult:
    """What a sweep did: its folder, every row (key order), the metadata, and the rows it computed now."""

    out_dir: Path
    rows: list[dict[str, Any]]
    meta: dict[str, Any]
    computed: int = 0
    plan: dict[str, Any] | None = None  # --dry-run

    def outputs(self) -> dict[str, str]:
        return {name: str(self.out_dir / name) for name in OUTPUTS}


def format_plan(plan: dict[str, Any], out_dir: Path) -> str:
    lines = [f"plan: {len(plan['rows_to_compute'])} of {plan['rows_total']} rows to compute in {out_dir} "
             f"({plan['rows_done']} done earlier)"]
    for r in plan["rows_to_compute"]:
        gi = f", λ∈{r['guidance_interval']}" if r["guidance_interval"] else ""
        gi += "" if r.get("guidance", "cfg") == "cfg" else (
            f", {MethodChoice(r['guidance'], tuple(r['guidance_settings'].items())).label()}")
        own = own_settings_label(r["sampler"], tuple(r.get("sampler_settings", {}).items()))
        lines.append(f"  {own}, T={r['steps']}, {r['grid']} grid{gi}, w={r['w']:g}: "
                     f"NFE {r['nfe_per_sample']} per sample")
    lines.append(f"NFE = {plan['nfe']:,} in all; ~{duration(plan['estimated_seconds'])} of sampling on "
                 f"{plan['processes']}× {plan['device']} ({plan['seconds_per_forward'] * 1000:.1f} ms per forward of "
                 f"{plan['forward_batch']} images; Inception scoring not included); disk ~{plan['disk_bytes'] / 1e6:.0f} MB")
    return "\n".join(lines)


# ---- the fast path: a finished sweep, found without torch ---------------------------------------------------------


def _newest(folder: Path) -> Path | None:
    """A run folder's newest EMA file, else its newest training checkpoint (cfgdiff.runs.sampling_files)."""
    for kind in ("ema", "checkpoint"):
        files = layout.step_files(folder, kind)
        if files:
            return files[-1]
    return None


def weights_file_guess(checkpoint: Path | str | None) -> Path | None:
    """The weights file `cfgdiff.runs` would resolve, found without importing torch: a file as given, a run
    folder's newest file, or the newest run's under runs/. Only a guess: a finished sweep is reused only
    when the file recorded by the real resolution has this same path, size and mtime."""
    if checkpoint is not None:
        path = Path(checkpoint)
        return _newest(path) if path.is_dir() else path
    runs = [f for d in Path("runs").glob("*/") if (f := _newest(d)) is not None] if Path("runs").is_dir() else []
    return max(runs, key=lambda f: f.stat().st_mtime) if runs else None


def finished_sweep(req: SweepConfig) -> SweepResult | None:
    """The finished sweep `req` asks for, or None when there is work to do (or it cannot tell without torch).
    Prints the "done earlier" lines (rank 0 under torchrun)."""
    if req.dry_run:
        return None
    file = weights_file_guess(req.checkpoint)
    out_dir = Path(req.out_dir) if req.out_dir else (default_out_dir(file) if file is not None else None)
    if file is None or out_dir is None:
        return None
    _recorded_settings(out_dir)
    summary = finished(out_dir, req, file)
    if summary is None:
        return None
    if launched_rank() == 0:
        for r in summary["rows"]:
            print(f"{line_label(line_of(row_key(r)))}, w={r['w']:g}: done earlier, skipped", file=sys.stderr)
    return SweepResult(out_dir, summary["rows"], summary["meta"])

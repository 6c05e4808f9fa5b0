"""From a command line to a resolved TrainConfig: the dataset under data/, the preset implied by
its resolution, the run directory, flag overrides; and the plan `--dry-run` prints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cfgdiff import dist
from cfgdiff.config import (
    PRESET_BY_RESOLUTION,
    TRAIN_PRESETS,
    TrainConfig,
    apply_overrides,
    override,
    to_dict,
    train_preset,
)
from cfgdiff.errors import ConfigError, DataError

DATASET_SUFFIXES = (".h5", ".hdf5")


def find_dataset(data_dir: Path = Path("data")) -> Path:
    """The one dataset file under `data_dir`; DataError listing the candidates if not exactly one."""
    found = sorted(p for p in data_dir.glob("*") if p.suffix in DATASET_SUFFIXES) if data_dir.is_dir() else []
    if len(found) == 1:
        return found[0]
    if not found:
        raise DataError(f"no dataset under {data_dir}/ (make one with `cfgdiff prepare`, or pass --data FILE)")
    # a usage error (exit 2): the command line must say which
    raise ConfigError(f"several datasets under {data_dir}/: {', '.join(p.name for p in found)}; pick one with --data")


def resolve_config(data: str | None, preset: str | None, run_dir: str | None,
                   overrides: dict[str, Any]) -> TrainConfig:
    """The run's config: dataset (the one under data/ by default), preset (by resolution by default),
    model size and classes from the dataset, run directory runs/<dataset>-<preset>, then overrides
    (config keys, nested as `model.dropout`; see `config.merge_overrides` for flags and --set)."""
    from cfgdiff.data.dataset import dataset_info

    path = Path(data) if data else find_dataset()
    info = dataset_info(path)
    if preset is None:
        preset = PRESET_BY_RESOLUTION.get(info.size)
        if preset is None:
            raise ConfigError(f"no preset for {info.size}×{info.size} data; choose one with --preset "
                              f"({', '.join(TRAIN_PRESETS)})")
    base = train_preset(preset)
    base = override(base, model=override(base.model, resolution=info.size, num_classes=info.num_classes),
                    dataset=str(path), run_dir=run_dir or str(Path("runs") / f"{path.stem}-{preset}"))
    return apply_overrides(base, overrides)


def _measured(cfg: TrainConfig, micro: int, steps: int) -> dict[str, Any]:
    """The estimate `train` prints before its first step (cfgdiff.train.estimate), for the plan."""
    import torch

    from cfgdiff.data.dataset import ImageDataset
    from cfgdiff.nn import build_unet
    from cfgdiff.train import estimate
    from cfgdiff.train.step import setup_model

    device = dist.device()
    with torch.random.fork_rng(devices=[]):
        m = setup_model(cfg, build_unet(cfg.model), device)
        rounds = max(1, cfg.batch // micro)
        est, _, _ = estimate.measure(m, cfg, ImageDataset(cfg.dataset), micro, rounds, steps)
    return {**est.as_dict(), "line": estimate.line(est, device, steps * cfg.batch / 1000),
            "too_slow": est.too_slow()}


def plan(cfg: TrainConfig, hours: float) -> dict[str, Any]:
    """What --dry-run prints: the resolved config, parameters, FLOPs per image, and the throughput
    needed to train cfg.kimg within `hours`."""
    from cfgdiff.nn import build_unet, count_params, forward_flops
    from cfgdiff.train.loop import total_steps

    flops = forward_flops(cfg.model)
    steps = total_steps(cfg)
    from cfgdiff.train.start import with_micro_batch

    world = dist.world_size()
    cfg, why = with_micro_batch(cfg, Path(cfg.run_dir), dist.device(), world)  # as training will resolve it
    micro = cfg.batch_per_device or max(1, cfg.batch // world)
    img_per_s = steps * cfg.batch / (hours * 3600)
    measured = _measured(cfg, micro, steps) if world == 1 else None
    return {
        "estimate": measured,
        "config": to_dict(cfg),
        "params": count_params(build_unet(cfg.model, "meta")),
        "flops_per_image_forward": flops,
        "flops_per_image_train": 3 * flops,  # forward + backward ≈ 3 forwards
        "steps": steps,
        "images": steps * cfg.batch,
        "world_size": world,
        "batch_per_device": micro,
        "accumulation_rounds": cfg.batch // (micro * world) if cfg.batch % (micro * world) == 0 else None,
        "batch_per_device_reason": why,
        "hours": hours,
        "img_per_s_needed": img_per_s,
        "tflops_needed": img_per_s * 3 * flops / 1e12,
    }

"""Helpers that tests in several layers share: plain functions (the fixtures are in conftest.py).

- write_dataset, tiny_config: a 16 px dataset file in prepare's layout and a tiny training config on it;
- saved_run: a run folder of checkpoint and EMA files of an untrained tiny net (train's own writer);
- random_images: uint8 images from a seed;
- random_state, as_pytorch_fid: Inception weights of the right shapes from a seed (saved by the
  `random_weights` fixture), for metric tests that need the network, not its trained values;
- plugin_cli: a plug-in installed as pip would (module + dist-info with its entry points) and a
  runner of `python -m cfgdiff ...` that sees it.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import torch

from cfgdiff.metrics.inception import FIDInception
from cfgdiff.metrics.weights import pytorch_fid_names
from cfgdiff.nn import build_unet
from cfgdiff.runs import dataset_record, save_checkpoint
from cfgdiff.train.setup import resolve_config


def write_dataset(path: Path, n: int = 64, size: int = 16, k: int = 4, seed: int = 0) -> Path:
    """A dataset file in `cfgdiff prepare`'s layout: K colours with a horizontal ramp, one per class."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    ramp = 0.5 + 0.5 * np.linspace(0, 1, size)[None, None, :, None]  # (1, 1, S, 1)
    colours = np.array([[230, 40, 40], [40, 200, 60], [50, 80, 230], [220, 200, 40]])[labels % 4]
    images = np.broadcast_to(colours[:, None, None, :] * ramp, (n, size, size, 3)).astype(np.uint8)
    strings = h5py.string_dtype()
    with h5py.File(path, "w") as f:
        f["images"], f["labels"] = images, labels.astype(np.int64)
        f.create_dataset("names", data=np.array([f"{i}.png" for i in range(n)], dtype=object), dtype=strings)
        f.attrs.update(format="cfgdiff-dataset", size=size, num_classes=k, count=n,
                       class_ids=np.array([f"c{i}" for i in range(k)], dtype=strings),
                       class_names=np.array([f"class {i}" for i in range(k)], dtype=strings))
    return path


def tiny_config(tmp_path: Path, run: str = "run", **overrides):
    data = tmp_path / "toy.h5"
    if not data.exists():
        write_dataset(data)
    base = {"batch": 4, "kimg": 0.016, "tick_kimg": 0.004, "snapshot_kimg": 0.008, "grid_kimg": 1.0,
            "grid_images": 2, "grid_steps": 2}
    return resolve_config(str(data), "tiny", str(tmp_path / run), {**base, **overrides})


def saved_run(tmp_path: Path, step: int = 4, **overrides) -> Path:
    """A run directory holding checkpoint and EMA files of `step` steps, written by runs.save_checkpoint
    from an untrained tiny net (the writer `train` uses, without the cost of training)."""
    cfg = tiny_config(tmp_path, **overrides)
    torch.manual_seed(0)
    net = build_unet(cfg.model)
    ema = copy.deepcopy(net)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr)
    run = Path(cfg.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    record = dataset_record(cfg.dataset, 16, 4, [f"class {i}" for i in range(4)])
    save_checkpoint(run, cfg, record, step, step * cfg.batch, net, ema, opt, keep=2)
    return run


def random_images(n: int, size: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def random_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Our-named random weights with the FID Inception's shapes; He-scaled so activations stay O(1)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, t in FIDInception(with_head=True).state_dict().items():
        if name.endswith(".weight") and t.ndim == 4:
            state[name] = torch.randn(t.shape, generator=g) * (2 / t[0].numel()) ** 0.5
        elif name.endswith(".var"):
            state[name] = torch.rand(t.shape, generator=g) + 0.5
        elif name == "output.weight":
            state[name] = torch.randn(t.shape, generator=g) * 0.05
        else:  # beta, mean
            state[name] = torch.randn(t.shape, generator=g) * 0.1
    return state


def as_pytorch_fid(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict in pytorch-fid's file layout (torchvision names, unit bn.weight, fc.bias, counters)."""
    theirs = {pytorch_fid_names()[k]: v for k, v in state.items()}
    for key in [k for k in theirs if k.endswith("bn.bias")]:
        theirs[key.replace("bn.bias", "bn.weight")] = torch.ones_like(theirs[key])
        theirs[key.replace("bn.bias", "bn.num_batches_tracked")] = torch.tensor(0)
    theirs.setdefault("fc.weight", torch.randn(1008, 2048) * 0.05)
    theirs["fc.bias"] = torch.randn(1008)
    return theirs


def plugin_cli(tmp_path: Path, module: str, source: str, entry_points: str) -> Callable[..., subprocess.CompletedProcess]:
    """Install `source` as the module `module` of a package whose entry_points.txt is `entry_points`, in a
    fresh site folder; returns cli(*args, entry="cfgdiff"): `python -m <entry> args` with only that site
    added (run in tmp_path, caches there)."""
    site = tmp_path / "site"
    info = site / f"{module}-0.1.dist-info"
    info.mkdir(parents=True)
    (site / f"{module}.py").write_text(source)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "XDG_CACHE_HOME": str(tmp_path / "xdg"), "COLUMNS": "200"}

    def cli(*args: str, entry: str = "cfgdiff") -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", entry, *args], capture_output=True, text=True, env=env,
                              cwd=tmp_path)

    return cli

"""The sample grid written during training: fixed seeds and classes, at w = 0 and at one w > 0.

Each block of rows (one w) sits under a caption band, `w=3  12.8 kimg` in white on black
(CAPTION_HEIGHT pixels; clipped on a grid narrower than the text), and the PNG's text chunks hold
the same facts in full: `w` (the blocks' values, top to bottom, comma-separated), `kimg`, `steps`,
`seeds`, `sampler`, `grid`.

The images come from `cfgdiff.sampling.generate.images_for_seeds`, the one seeds → images function
`sample` uses too, with cfg.grid_sampler on the λ grid cfg.grid_schedule.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from cfgdiff.config import SamplerConfig, TrainConfig
from cfgdiff.console import Progress
from cfgdiff.files import atomic_write
from cfgdiff.images import tile
from cfgdiff.sampling.generate import images_for_seeds

CAPTION_HEIGHT = 12


@torch.no_grad()
def write_sample_grid(net: torch.nn.Module, cfg: TrainConfig, path: Path, autocast: torch.dtype | None,
                      kimg: float) -> Path:
    """Sample seeds 0 … n−1 (class = seed mod K) with cfg.grid_steps steps of cfg.grid_sampler on the
    λ grid cfg.grid_schedule, once at w = 0
    and once at w = cfg.grid_w (skipped for an unconditional model), and tile them: one block of
    rows per w under its caption, the same seed in the same column."""
    n, k = cfg.grid_images, cfg.model.num_classes
    device = next(net.parameters()).device
    seeds = list(range(n))
    labels = [s % k if k else 0 for s in seeds]
    ncols = min(n, 16)
    per_block = math.ceil(n / ncols) * ncols
    low = cfg.distill.w_min if cfg.distill is not None else 0.0  # a student's lowest w (0: conditional)
    blocks, ws = [], (low, cfg.grid_w) if k and cfg.grid_w > low else (low,)
    with Progress(f"preview grid {path.name}", total=len(ws) * cfg.grid_steps, unit="step") as bar:  # never silent
        for w in ws:
            sampler = SamplerConfig(steps=cfg.grid_steps, w=w, sampler=cfg.grid_sampler, grid=cfg.grid_schedule)
            images = images_for_seeds(net, cfg, seeds, labels, sampler, device, autocast, require_finite=False,
                                      callback=_steps_of(bar, cfg.grid_steps))
            blocks.append(_block(images, per_block, n, ncols))
    return save_captioned(blocks, [f"w={w:g}  {kimg:g} kimg" for w in ws], path,
                          {"w": ",".join(f"{w:g}" for w in ws), "kimg": f"{kimg:g}", "steps": str(cfg.grid_steps),
                           "seeds": f"0-{n - 1}", "sampler": cfg.grid_sampler, "grid": cfg.grid_schedule})


def _steps_of(bar: Progress, steps: int):
    """A sampler callback (evaluation i of n) that advances `bar` by steps, whatever a step costs."""
    done = [0]

    def callback(i: int, n: int) -> None:
        now = i * steps // max(n, 1)
        bar.advance(now - done[0])
        done[0] = now

    return callback


def _block(images: np.ndarray, per_block: int, n: int, ncols: int) -> np.ndarray:
    """One w's images tiled, padded with black to whole rows."""
    images = images[..., :3]
    pad = np.zeros((per_block - n, *images.shape[1:]), dtype=np.uint8)
    return tile(np.concatenate([images, pad]), ncols)


def save_captioned(blocks: list[np.ndarray], captions: list[str], path: Path, text: dict[str, str]) -> Path:
    """Stack (H, W, C) uint8 blocks, each under a CAPTION_HEIGHT band with its caption, into a PNG
    at `path` (written under a temporary name, then renamed) with `text` as its text chunks."""
    from PIL import Image, ImageDraw, ImageFont
    from PIL.PngImagePlugin import PngInfo

    width = blocks[0].shape[1]
    font = ImageFont.load_default()
    rows = []
    for block, caption in zip(blocks, captions):
        band = Image.new("RGB", (width, CAPTION_HEIGHT))
        ImageDraw.Draw(band).text((2, 0), caption, fill=(255, 255, 255), font=font)
        rows += [np.asarray(band), np.repeat(block, 3, axis=2) if block.shape[2] == 1 else block]
    info = PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    atomic_write(path, lambda f: Image.fromarray(np.concatenate(rows)).save(f, format="PNG", pnginfo=info))
    return path

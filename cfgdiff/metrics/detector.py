"""The Inception detector: weights resolved and verified, images validated, features computed in batches.

    det = load_detector()                       # resolution order: cfgdiff.metrics.weights
    feats = det.features(images_uint8_nhwc)     # Features(pool (B, 2048), logits (B, 1008) | None, spatial (B, 2023))
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from cfgdiff import dist
from cfgdiff.errors import MetricsError, WeightsError
from cfgdiff.files import sha256_file
from cfgdiff.metrics.inception import Features, FIDInception
from cfgdiff.metrics.resize import inception_input
from cfgdiff.metrics.weights import check_sha256, read_weights, resolve_weights


class InceptionDetector:
    """FIDInception with provenance (`path`, `sha256`, `format`) and a batched uint8 front end."""

    def __init__(self, net: FIDInception, path: Path, sha256: str, fmt: str, device: torch.device,
                 batch_size: int = 64):
        # channels_last: oneDNN/cuDNN's fast layout for these convolutions (~1.5x on CPU), same float32 math
        self.net = net.to(device, memory_format=torch.channels_last)
        self.path, self.sha256, self.format, self.device = Path(path), sha256, fmt, device
        self.batch_size = batch_size

    @property
    def has_logits(self) -> bool:
        """Whether the 1008-way head is loaded (IS needs it)."""
        return self.net.has_logits

    def provenance(self) -> dict[str, object]:
        return {"path": str(self.path), "sha256": self.sha256, "format": self.format, "has_logits": self.has_logits}

    @torch.no_grad()
    def features(self, images: np.ndarray | torch.Tensor) -> Features:
        """Features of uint8 (B, H, W, 3) images, on this detector's device, float32.

        Runs in chunks of `batch_size`; TF32 is disabled so a GPU gives the float32 features a CPU gives.
        """
        x = as_uint8_nhwc(images)
        parts = []
        with full_fp32():
            for i in range(0, x.shape[0], self.batch_size):
                chunk = x[i : i + self.batch_size].to(self.device, non_blocking=True)
                parts.append(self.net(inception_input(chunk).contiguous(memory_format=torch.channels_last)))
        logits = torch.cat([p.logits for p in parts]) if self.has_logits else None
        return Features(torch.cat([p.pool for p in parts]), logits, torch.cat([p.spatial for p in parts]))


@contextlib.contextmanager
def full_fp32() -> Iterator[None]:
    """float32 convolutions and matrix products without TF32 (or bf16) inside, the previous settings
    restored after. cuBLAS matters too: the resize is an einsum, the logits and precision/recall's
    distances are matrix products, and training turns TF32 on for its whole process (`cfgdiff demo`
    scores in the process that trained)."""
    matmul = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=False, allow_tf32=False):
            yield
    finally:
        torch.set_float32_matmul_precision(matmul)


def as_uint8_nhwc(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Validate a batch of images: uint8, (B, H, W, 3), B >= 1. Returns a torch view (no copy)."""
    if isinstance(images, np.ndarray):
        # torch.from_numpy refuses read-only memory (np.frombuffer, memory maps) without a copy
        images = torch.from_numpy(np.array(images, copy=not images.flags.writeable or None, order="C"))
    if not isinstance(images, torch.Tensor):
        raise MetricsError(f"images must be a numpy array or torch tensor, got {type(images).__name__}")
    if images.dtype != torch.uint8:
        raise MetricsError(f"images must be uint8 in [0, 255], got {images.dtype}")
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[0] < 1 or min(images.shape[1:3]) < 1:
        raise MetricsError(f"images must have shape (N, H, W, 3) with N >= 1, got {tuple(images.shape)}")
    return images


def load_detector(path: str | os.PathLike | None = None, device: torch.device | str | None = None,
                  batch_size: int = 64, *, search_package: bool = True) -> InceptionDetector:
    """The FID Inception with weights from `path` or the resolution order of `cfgdiff.metrics.weights`.

    Raises WeightsError for a missing, unreadable, wrongly hashed or wrongly shaped weights file.
    """
    file = resolve_weights(path, search_package=search_package)
    sha256 = sha256_file(file)
    check_sha256(file, sha256)
    state, fmt = read_weights(file)
    net = FIDInception(with_head="output.weight" in state)
    load_state(net, state, file)
    device = torch.device(device) if device is not None else dist.device()
    return InceptionDetector(net, file, sha256, fmt, device, batch_size)


def load_state(net: FIDInception, state: dict[str, torch.Tensor], origin: Path) -> None:
    """Copy `state` into `net`, naming the first missing, unexpected or wrongly shaped tensor."""
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    if missing:
        raise WeightsError(f"{origin}: missing tensor '{missing[0]}' ({len(missing)} missing)")
    unexpected = sorted(set(state) - set(own))
    if unexpected:
        raise WeightsError(f"{origin}: unexpected tensor '{unexpected[0]}'")
    for name, value in state.items():
        if tuple(value.shape) != tuple(own[name].shape):
            raise WeightsError(f"{origin}: tensor '{name}' has shape {tuple(value.shape)}, "
                               f"expected {tuple(own[name].shape)}")
        if not torch.isfinite(value).all():
            raise WeightsError(f"{origin}: tensor '{name}' is not finite")
    net.load_state_dict({k: v.to(torch.float32) for k, v in state.items()})

"""Encoded image bytes -> RGB uint8 array of the target size. Runs in the worker processes.

Every image becomes RGB whatever its file claims: grayscale, CMYK, palette (with or without
transparency), alpha (dropped, as `Image.convert("RGB")` does in ADM, EDM and torchvision), and
16-bit (scaled to 8 bits, where Pillow's own conversion would clip at 255). The format is read from
the content, so a PNG named `.JPEG` (ImageNet has some) decodes fine.

Baseline YCbCr JPEGs (nearly every ImageNet photo) are decoded by simplejpeg, libjpeg-turbo called
straight into a numpy array: 0.79 ms a 500x375 photo against Pillow's 1.20 ms (open, load and the
RGBX -> RGB copy out), with the same libjpeg settings and so the same pixels (tests/data/test_prepare_images.py
checks it on each chroma subsampling, progressive files and the CIFAR-10 JPEGs). It runs in strict
mode: a file that makes libjpeg warn (damaged, truncated) or fail goes to Pillow, which decides as
before, so what is skipped, and why, does not depend on the fast path.

A file that does not decode is not an error here: its reason is returned and the caller skips it.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import simplejpeg
from PIL import Image

from cfgdiff.data.resize import FAST_RESIZES, resize_array, resize_rgb

_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")


@dataclass(frozen=True)
class ImageSpec:
    """What every image becomes: size × size RGB by `resize`; `draft` allows JPEG DCT scaling."""

    size: int
    resize: str
    draft: bool = False


@dataclass(frozen=True)
class Decoded:
    """The result of one task: images (n, S, S, 3) uint8 and, per image, "" or why it was skipped."""

    images: np.ndarray
    reasons: list[str]


def to_rgb(img: Image.Image) -> Image.Image:
    """`img` as an 8-bit RGB image (see the module docstring for the conventions)."""
    if img.mode == "RGB":
        return img
    if img.mode in _SIXTEEN_BIT:
        wide = np.asarray(img).astype(np.int64).clip(0, 65535)
        gray = (wide * 255 + 32767) // 65535  # 65535 -> 255, rounded
        return Image.fromarray(gray.astype(np.uint8), "L").convert("RGB")
    if img.mode == "P":
        # palette transparency is only honoured through RGBA; the alpha is then dropped below
        img = img.convert("RGBA")
    return img.convert("RGB")


def fast_jpeg(data: bytes) -> np.ndarray | None:
    """A baseline YCbCr JPEG decoded by libjpeg-turbo as (H, W, 3) uint8, or None where Pillow must do it.

    None for anything else (not a JPEG, CMYK, grayscale), for images over Pillow's decompression-bomb
    limit (Pillow then applies it), and for any file libjpeg warns about or rejects.
    """
    if data[:3] != b"\xff\xd8\xff":
        return None
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        if colorspace != "YCbCr" or height * width > (Image.MAX_IMAGE_PIXELS or float("inf")):
            return None
        return simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True)
    except ValueError:
        return None


def decode_image(data: bytes, spec: ImageSpec) -> np.ndarray:
    """Decode one encoded image and resize it to (size, size, 3) uint8. Raises on a bad file.

    With `spec.draft`, a JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8) whose sides stay
    at least 2·size, before the resize: 2-4x faster on ImageNet-sized photos but not bit-exact
    (docs/prepare.md gives the measured difference).
    """
    if not spec.draft and spec.resize in FAST_RESIZES:
        pixels = fast_jpeg(data)
        if pixels is not None:
            return resize_array(pixels, spec.size, spec.resize)
    img = Image.open(io.BytesIO(data))
    if spec.draft and img.format == "JPEG":
        img.draft(None, (2 * spec.size, 2 * spec.size))
    img.load()
    return resize_rgb(to_rgb(img), spec.size, spec.resize)


def _reason(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass(frozen=True)
class EncodedBatch:
    """A task: encoded files (bytes, or the reason they could not be read) to decode in a worker."""

    payloads: list[bytes | str]
    spec: ImageSpec

    def run(self) -> Decoded:
        s = self.spec.size
        images = np.zeros((len(self.payloads), s, s, 3), dtype=np.uint8)
        reasons = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # EXIF and ICC chatter from damaged files
            for i, payload in enumerate(self.payloads):
                if isinstance(payload, str):
                    reasons.append(payload)
                    continue
                try:
                    images[i] = decode_image(payload, self.spec)
                    reasons.append("")
                except Exception as exc:  # a damaged file of any kind is skipped, never fatal
                    reasons.append(_reason(exc))
        return Decoded(images, reasons)

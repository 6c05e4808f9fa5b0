"""Pixels: the area resize, ADM's crop, and decoding every kind of file to RGB."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from prepare_support import block_mean, encode, expected_pixels, smooth_image

from cfgdiff.data.decode import EncodedBatch, ImageSpec, decode_image, fast_jpeg
from cfgdiff.data.resize import adm_center_crop, area_resize

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("shape", [(64 * 3, 64 * 2), (64, 64 * 5), (64 * 7, 64)])
def test_area_of_multiples_is_the_rounded_block_mean(shape):
    a = RNG.integers(0, 256, (*shape, 3), dtype=np.uint8)
    assert np.array_equal(area_resize(a, 64), block_mean(a, 64))


def test_area_rounds_half_up():
    a = np.array([[0, 1], [0, 0]], dtype=np.uint8)[..., None].repeat(3, -1)  # mean 0.25 -> 0
    b = np.array([[1, 1], [0, 0]], dtype=np.uint8)[..., None].repeat(3, -1)  # mean 0.5 -> 1
    c = np.array([[255, 254], [254, 254]], dtype=np.uint8)[..., None].repeat(3, -1)  # 254.25 -> 254
    assert [int(area_resize(x, 1)[0, 0, 0]) for x in (a, b, c)] == [0, 1, 254]


def _area_weights(n_in: int, n_out: int) -> np.ndarray:
    """The overlap of each output cell with each input pixel, divided by the cell length."""
    lo = np.arange(n_out)[:, None] * n_in / n_out
    i = np.arange(n_in)[None, :]
    overlap = np.minimum(lo + n_in / n_out, i + 1) - np.maximum(lo, i)
    return overlap.clip(0) * n_out / n_in


@pytest.mark.parametrize("h, w, size", [(375, 500, 64), (37, 23, 16), (10, 7, 16), (300, 9, 8), (1030, 600, 4)])
def test_area_of_any_shape_matches_exact_area_weights(h, w, size):
    a = RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)
    wh, ww = _area_weights(h, size), _area_weights(w, size)
    ref = np.einsum("sh,hwc,tw->stc", wh, a.astype(np.float64), ww, optimize=True)
    out = area_resize(a, size).astype(np.float64)
    assert np.abs(out - ref).max() <= 0.5 + 1e-9  # the rounding, nothing more
    assert np.array_equal(out, np.floor(ref + 0.5))


@pytest.mark.parametrize("h", [257 * 4, 258 * 4, 1030, 3000])
def test_area_of_white_stays_white_whatever_the_cell_length(h):
    # cells of 257 or more whole pixels: their 8-bit sums no longer fit 16 bits
    assert (area_resize(np.full((h, 9, 3), 255, np.uint8), 4) == 255).all()
    assert (area_resize(np.full((9, h, 3), 255, np.uint8), 4) == 255).all()


def test_adm_crop_of_constant_2x2_blocks_is_exact():
    # 128x128 -> one box halving (exact on constant blocks) -> already 64: bicubic at scale 1, centre crop
    small = RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    big = small.repeat(2, 0).repeat(2, 1)
    assert np.array_equal(adm_center_crop(Image.fromarray(big), 64), small)


def test_adm_crop_takes_the_centre_of_the_long_side():
    # 96x256 at size 32: halve once to 48x128, bicubic by 2/3 to 32x85, crop columns 26..57
    a = np.zeros((96, 256, 3), dtype=np.uint8)
    a[:, :128] = 200  # left half bright: the crop window straddles the middle
    out = adm_center_crop(Image.fromarray(a), 32)
    assert out.shape == (32, 32, 3)
    col = out[16, :, 0].astype(int)
    assert col[0] == 200 and col[-1] == 0  # bright left, dark right
    assert 14 <= np.argmin(np.abs(col - 100)) <= 17  # the edge near the middle (85/2 - 26 = 16.5)


SPEC = ImageSpec(size=8, resize="area")


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
def test_jpeg_modes_decode_like_pillow_full_decode(mode):
    data = encode(smooth_image(1, 16, 24), "JPEG", mode=mode, quality=95)
    assert Image.open(io.BytesIO(data)).mode == mode
    assert np.array_equal(decode_image(data, SPEC), expected_pixels(data))


def test_palette_with_transparency_and_rgba_drop_alpha():
    rgb = smooth_image(2, 16, 16)
    rgba = np.concatenate([rgb, np.full((16, 16, 1), 7, np.uint8)], -1)
    assert np.array_equal(decode_image(encode(rgba, "PNG"), SPEC), block_mean(rgb, 8))
    pal = Image.fromarray(rgb).quantize(16)
    pal.info["transparency"] = 0
    buf = io.BytesIO()
    pal.save(buf, "PNG", transparency=0)
    assert np.array_equal(decode_image(buf.getvalue(), SPEC), block_mean(np.asarray(pal.convert("RGB")), 8))


def test_16_bit_grayscale_is_scaled_not_clipped():
    wide = (np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) * 257)  # 0 .. 65535 in steps of 257
    data = encode(wide, "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    gray = (wide.astype(np.int64) * 255 + 32767) // 65535  # = wide / 257 exactly
    assert np.array_equal(decode_image(data, SPEC), block_mean(np.repeat(gray[..., None], 3, -1).astype(np.uint8), 8))


def test_png_named_jpeg_decodes_by_content():
    data = encode(smooth_image(3, 8, 16), "PNG")
    batch = EncodedBatch([data], SPEC).run()  # the name never reaches the decoder
    assert batch.reasons == [""] and np.array_equal(batch.images[0], expected_pixels(data))


def test_damaged_files_are_reported_not_raised():
    good = encode(smooth_image(4, 16, 16), "JPEG", quality=90)
    out = EncodedBatch([good[: len(good) // 2], b"not an image", "unreadable: gone", good], SPEC).run()
    assert [bool(r) for r in out.reasons] == [True, True, True, False]
    assert "truncated" in out.reasons[0].lower() and out.reasons[1].startswith("UnidentifiedImageError")
    assert not out.images[:3].any() and np.array_equal(out.images[3], expected_pixels(good))


def test_draft_decodes_at_reduced_scale_and_stays_close():
    big = smooth_image(5, 384, 512)
    data = encode(big, "JPEG", quality=90)
    spec = ImageSpec(size=32, resize="area", draft=True)
    img = Image.open(io.BytesIO(data))
    img.draft(None, (64, 64))
    assert img.size == (128, 96)  # scale 1/4: the smallest with both sides >= 2·32
    exact = decode_image(data, ImageSpec(size=32, resize="area"))
    drafted = decode_image(data, spec)
    assert np.array_equal(exact, expected_pixels(data, 32))
    assert not np.array_equal(drafted, exact)  # not bit-exact, hence an explicit option
    assert np.abs(drafted.astype(int) - exact).mean() < 1.0


# --- the libjpeg-turbo fast path gives Pillow's pixels, and leaves every doubtful file to Pillow ---

def _noisy_photo(seed: int, h: int, w: int) -> np.ndarray:
    """Smooth field plus grain: every DCT coefficient and the chroma upsampling matter."""
    rng = np.random.default_rng(seed)
    grain = rng.normal(0, 12, (h, w, 3))
    return (smooth_image(seed, h, w).astype(np.float64) + grain).clip(0, 255).astype(np.uint8)


def _pillow_rgb(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.mark.parametrize(
    "h, w, kw",
    [
        (375, 500, {"quality": 90}),  # 4:2:0, ImageNet's usual
        (333, 499, {"quality": 75, "subsampling": 1}),  # 4:2:2, odd sides
        (97, 131, {"quality": 95, "subsampling": 0}),  # 4:4:4
        (240, 320, {"quality": 85, "progressive": True}),
        (64, 80, {"quality": 60, "optimize": True}),
        (1, 17, {"quality": 90}),
    ],
)
def test_fast_jpeg_decodes_pillows_pixels(h, w, kw):
    data = encode(_noisy_photo(h * w, h, w), "JPEG", **kw)
    fast = fast_jpeg(data)
    assert fast is not None and np.array_equal(fast, _pillow_rgb(data))


def test_fast_jpeg_matches_pillow_on_cifar10_jpegs():
    import tarfile
    from pathlib import Path

    tar = Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10-jpg.tar.gz"
    if not tar.is_file():
        pytest.skip("../shared/data/cifar10-jpg.tar.gz is absent")
    seen = 0
    with tarfile.open(tar) as tf:
        for member in tf:
            if member.isfile() and member.name.endswith(".jpg"):
                data = tf.extractfile(member).read()
                fast = fast_jpeg(data)
                assert fast is not None and np.array_equal(fast, _pillow_rgb(data)), member.name
                seen += 1
                if seen == 300:
                    break
    assert seen == 300


@pytest.mark.parametrize("mode", ["L", "CMYK"])
def test_fast_jpeg_leaves_other_colour_spaces_to_pillow(mode):
    assert fast_jpeg(encode(smooth_image(5, 16, 16), "JPEG", mode=mode)) is None
    assert fast_jpeg(encode(smooth_image(5, 16, 16), "PNG")) is None


def test_fast_jpeg_leaves_damaged_files_to_pillow():
    good = encode(_noisy_photo(6, 120, 160), "JPEG", quality=90)
    corrupt = bytearray(good)
    corrupt[len(good) // 2 : len(good) // 2 + 50] = bytes(50)  # libjpeg warns, Pillow decodes anyway
    for bad in (good[: len(good) // 2], good[:-2], bytes(corrupt), good[:40]):
        assert fast_jpeg(bad) is None
    # so the damaged-but-decodable file gives Pillow's pixels, and the truncated one Pillow's reason
    spec = ImageSpec(size=16, resize="area")
    out = EncodedBatch([bytes(corrupt), good[:-2]], spec).run()
    assert out.reasons[0] == "" and np.array_equal(out.images[0], area_resize(_pillow_rgb(bytes(corrupt)), 16))
    assert "truncated" in out.reasons[1].lower()


def test_fast_jpeg_leaves_decompression_bombs_to_pillow(monkeypatch):
    data = encode(_noisy_photo(7, 40, 50), "JPEG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40 * 50 - 1)
    assert fast_jpeg(data) is None


@pytest.mark.parametrize("resize", ["area", "box"])
def test_decode_image_is_the_same_with_and_without_the_fast_path(resize, monkeypatch):
    data = encode(_noisy_photo(8, 375, 500), "JPEG", quality=90)
    spec = ImageSpec(size=64, resize=resize)
    fast = decode_image(data, spec)
    import cfgdiff.data.decode as decode

    monkeypatch.setattr(decode, "fast_jpeg", lambda data: None)
    assert np.array_equal(fast, decode_image(data, spec))

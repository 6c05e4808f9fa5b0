"""Shared fixtures. `shared_data` is ../shared/data beside the checkout; tests that need it skip cleanly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cfgdiff.metrics.weights import ENV_VAR
from support import as_pytorch_fid, random_state, saved_run

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
CIFAR_TAR = SHARED_DATA / "cifar10-jpg.tar.gz"


@pytest.fixture(autouse=True)
def no_weights_download(monkeypatch):
    """No test downloads the 95 MB Inception weights (subprocesses inherit this): the tests that
    exercise the download pass a 127.0.0.1 URL themselves."""
    monkeypatch.setenv("CFGDIFF_INCEPTION_URL", "")


@pytest.fixture
def cifar_tar() -> Path:
    if not CIFAR_TAR.exists():
        pytest.skip(f"{CIFAR_TAR} is absent")
    return CIFAR_TAR


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test: two OpenMP threads on this shared 2-core machine spin
    against the other processes (measured 8x slower on a small training step)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def no_flush_denormal_leak():
    """In-process training sets torch's flush-to-zero for speed (cfgdiff.train.step); restore IEEE
    subnormals after each test, so later tests (hypothesis's float strategies) see the default."""
    yield
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_flush_denormal(False)


# ---- shared across layers: Inception weights, caches, a saved tiny run, the tiny trained workspace ----
@pytest.fixture(scope="session")
def random_weights(tmp_path_factory) -> tuple:
    state = random_state()
    path = tmp_path_factory.mktemp("weights") / "random-pytorch-fid.pth"
    torch.save(as_pytorch_fid(state), path)
    return path, state


@pytest.fixture
def isolated_caches(tmp_path, monkeypatch):
    """No shared cache: XDG_CACHE_HOME in the test's folder, no weights path from the environment."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(ENV_VAR, raising=False)


@pytest.fixture(scope="module")
def run_and_ref(tmp_path_factory):
    d = tmp_path_factory.mktemp("sweep-axes")
    run = saved_run(d)
    rng = np.random.default_rng(0)
    np.savez(d / "ref.npz", arr_0=rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8))
    return run, d / "ref.npz"


@pytest.fixture(scope="session")
def trained_workspace() -> Path:
    """One tiny trained run for the whole session (faults_support.workspace: data/shapes16.h5,
    runs/tiny, ref.npz); read-only: copy what a test changes."""
    from faults_support import workspace

    return workspace()

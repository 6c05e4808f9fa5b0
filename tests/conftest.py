"""Shared fixtures. `shared_data` is ../shared/data beside the checkout; tests that need it skip cleanly."""

from __future__ import annotations

from pathlib import Path

import pytest

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

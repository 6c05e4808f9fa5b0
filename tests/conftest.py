"""Shared fixtures. `shared_data` is ../shared/data beside the checkout; tests that need it skip cleanly."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
CIFAR_TAR = SHARED_DATA / "cifar10-jpg.tar.gz"


@pytest.fixture
def cifar_tar() -> Path:
    if not CIFAR_TAR.exists():
        pytest.skip(f"{CIFAR_TAR} is absent")
    return CIFAR_TAR

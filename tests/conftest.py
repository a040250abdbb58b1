"""Shared fixtures: where the shared data sets are, and skips when they are absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    return Path(os.environ.get("LMLAB_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return data_root()


def need_data(*parts: str) -> Path:
    """The path of a shared data file or folder, or skip the test when it is not present."""
    path = data_root().joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not present: {path} (set LMLAB_DATA)")
    return path


@pytest.fixture
def no_progress():
    from lmlab.core.progress import set_quiet

    set_quiet(True)
    yield
    set_quiet(False)

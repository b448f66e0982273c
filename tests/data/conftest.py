"""The real datasets of ../shared/data (see its README), read-only. Tests link the folders they
need into a temporary data root, so what else a data root holds (say a real MNIST) cannot change
which source a loader picks."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"


def shared_data() -> Path | None:
    """../shared/data, else $OVERNIGHT_DATA when it holds the same folders."""
    for cand in (SHARED, Path(os.environ.get("OVERNIGHT_DATA", "") or SHARED)):
        if (cand / "tinyshakespeare" / "input.txt").is_file() and (cand / "fashion-mnist").is_dir():
            return cand
    return None


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No download is tried, and tiktoken sees only an empty cache of this test's own."""
    monkeypatch.setenv("OVERNIGHT_OFFLINE", "1")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken-empty"))


@pytest.fixture
def real_root(tmp_path):
    """link(*folders) -> a data root holding only those folders of the shared data."""
    shared = shared_data()
    if shared is None:
        pytest.skip(f"the real datasets are not in {SHARED} (nor in OVERNIGHT_DATA)")

    def link(*folders: str) -> Path:
        root = tmp_path / "data"
        root.mkdir(exist_ok=True)
        for f in folders:
            (root / f).symlink_to(shared / f, target_is_directory=True)
        return root

    return link

"""Shared fixtures: where the third-party data lives, the shipped UV layout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    """../shared/data beside the checkout, or $STREAMCAP_DATA."""
    env = os.environ.get("STREAMCAP_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    d = data_dir()
    if not d.is_dir():
        pytest.skip(f"shared data folder not found at {d} (set STREAMCAP_DATA)")
    return d


@pytest.fixture(scope="session")
def layout():
    from streamcap.bundle import default_layout

    return default_layout()


@pytest.fixture(scope="module")
def small(layout):
    """Every 4th UV pixel of the shipped layout: a fast layout for the codec tests."""
    from codec_synth import small_layout

    return small_layout(layout, 4)

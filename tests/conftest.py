"""Shared fixtures: where the third-party data lives, the shipped UV layout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# The fuzz suite (test_fuzz.py): "ci" is the default (well under a minute); run deeper with
# ``pytest tests/test_fuzz.py --hypothesis-profile=long`` (or benchmarks/fuzz_long.sh).
_FUZZ = dict(deadline=None, print_blob=True,
             suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
settings.register_profile("ci", max_examples=200, **_FUZZ)
settings.register_profile("long", max_examples=5000, **_FUZZ)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

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

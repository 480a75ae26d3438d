"""Fixtures shared by the tests."""
import os

import pytest

from helpers import PAPER_CSV


@pytest.fixture
def paper_csv():
    """The paper's T2000 layer timings (shared/data beside the clone); skips if absent."""
    if not os.path.exists(PAPER_CSV):
        pytest.skip(f"paper measurements not found at {PAPER_CSV}")
    return PAPER_CSV

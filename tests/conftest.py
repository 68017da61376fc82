"""Shared fixtures: real recordings through MEGFM_TEST_DATA, small seeded synthetic data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Keep the suite quick and deterministic on 2-core CI machines.
os.environ.setdefault("MPLBACKEND", "Agg")
try:
    import torch

    torch.set_num_threads(min(2, torch.get_num_threads()))
except ImportError:  # pragma: no cover
    pass

REAL_FILES = {
    "vectorview": "SSS/sample_audvis_trunc_raw_sss.fif",
    "triux": "SSS/TRIUX/triux_bmlhus_erm_raw_sss.fif",
    "vectorview90": "SSS/141027_cropped_90Hz_raw.fif",
    "ctf275": "CTF/testdata_ctf_short_discontinuous.ds_raw.fif",
    "ctf151": "CTF/somMDYO-18av.ds_raw.fif",
    "kit": "KIT/ArtificalSignalData_Yokogawa_1khz.con",
}


@pytest.fixture(scope="session")
def test_data_dir() -> Path:
    """Folder of real recordings (``MEGFM_TEST_DATA``); skips the test when unset."""
    root = os.environ.get("MEGFM_TEST_DATA")
    if not root:
        pytest.skip("MEGFM_TEST_DATA is not set: real-recording tests are skipped.")
    path = Path(root)
    if not path.is_dir():
        pytest.skip(f"MEGFM_TEST_DATA={root} is not a folder.")
    return path


@pytest.fixture(scope="session")
def real_file(test_data_dir):
    """Return a function mapping a short name of :data:`REAL_FILES` to its path."""

    def _get(name: str) -> Path:
        path = test_data_dir / REAL_FILES[name]
        if not path.exists():
            pytest.skip(f"{path} is missing from MEGFM_TEST_DATA.")
        return path

    return _get


@pytest.fixture
def restore_torch_threads():
    """Put torch's thread count back after a test whose benchmark sets its own."""
    import torch

    old = torch.get_num_threads()
    yield
    torch.set_num_threads(old)

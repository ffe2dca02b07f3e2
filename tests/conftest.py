"""Shared, generated, session-scoped fixtures (small and fast; nothing here is MANO data)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared").resolve()

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only reference folder ``../shared`` (real NYU files, oracle outputs, specs)."""
    if not SHARED.is_dir():
        pytest.skip(f"reference folder {SHARED} not present")
    return SHARED


@pytest.fixture(scope="session")
def standin_pkl(tmp_path_factory) -> Path:
    """Path of a freshly generated procedural stand-in ``MANO_RIGHT.pkl`` (v1.2 container)."""
    from render.standin import write_standin

    path = tmp_path_factory.mktemp("mano") / "MANO_RIGHT.pkl"
    write_standin(str(path))
    return path


@pytest.fixture(scope="session")
def standin_model():
    """The stand-in read back through the same restricted reader as the real file (``load_standin`` writes
    a real temporary ``MANO_RIGHT.pkl``; the file-level tests use ``standin_pkl``)."""
    from render.standin import load_standin

    return load_standin()


@pytest.fixture(scope="session")
def oracle_model(shared_dir):
    """The random MANO-format model the official-code oracle outputs were made with."""
    from render.mano_io import load_mano

    return load_mano(str(shared_dir / "oracle" / "mano_synth_model.npz"))


@pytest.fixture(scope="session")
def mano_model(standin_model):
    """A valid MANO-format model for checks that hold for any model: the oracle's model when ../shared is
    present, else the generated stand-in (so these checks never skip)."""
    from render.mano_io import load_mano

    oracle = SHARED / "oracle" / "mano_synth_model.npz"
    return load_mano(str(oracle)) if oracle.is_file() else standin_model

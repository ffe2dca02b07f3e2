"""Launching a script under ``torchrun`` from a test (the DDP tests): one clean environment, one command line."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: variables of an outer launcher that must not leak into the one a test starts
LAUNCH_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def launch_env() -> dict[str, str]:
    """The current environment without launcher variables, the repo importable, one intra-op thread per process."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_KEYS}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return env


def torchrun_cmd(script: str | os.PathLike, *args: str, nproc: int = 2) -> list[str]:
    """``python -m torch.distributed.run --standalone`` on one node with ``nproc`` processes."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", f"--nproc_per_node={nproc}",
            str(script), *map(str, args)]


def run_torchrun(script: str | os.PathLike, *args: str, nproc: int = 2, timeout: float = 300
                 ) -> subprocess.CompletedProcess:
    """Run ``script`` under torchrun from the repo root; fails the test (stderr tail shown) on a non-zero exit."""
    proc = subprocess.run(torchrun_cmd(script, *args, nproc=nproc), cwd=REPO, env=launch_env(),
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc

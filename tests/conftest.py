import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def psx_executable() -> str:
    """The real installed `psx` console script of the environment running the tests."""
    beside_python = Path(sys.executable).parent / "psx"
    found = str(beside_python) if beside_python.exists() else shutil.which("psx")
    if not found:
        pytest.fail("the `psx` command is not installed; run `pip install -e .[dev]` first")
    return found


def run_psx(args, cwd, timeout=300, extra_env=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRA_")}
    if SHARED_DATA.is_dir():
        env.setdefault("PSX_DATA_DIR", str(SHARED_DATA))
    for key, value in (extra_env or {}).items():  # None removes a variable
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return subprocess.run(
        [psx_executable(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def psx(tmp_path):
    """Run `psx ...` in a fresh temporary working folder (outputs/ lands there)."""

    def _run(*args, **kwargs):
        return run_psx(list(args), cwd=tmp_path, **kwargs)

    _run.cwd = tmp_path
    return _run

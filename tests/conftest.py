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


def require_shared_data() -> Path:
    """The real data files beside the project; skip without them, but fail in CI (CI=true)."""
    if not SHARED_DATA.is_dir():
        message = f"real data not found at {SHARED_DATA} (see DESIGN.md: Data on these machines)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + "; CI must have it")
        pytest.skip(message)
    return SHARED_DATA


def copy_into(root: Path, layout: dict[str, str]) -> Path:
    """Copy shared files into root in the layout psx (and torchvision) expect: {src: dest folder}."""
    shared = require_shared_data()
    for src, dest in layout.items():
        target = root / dest
        target.mkdir(parents=True, exist_ok=True)
        for f in sorted((shared / src).parent.glob((shared / src).name)):
            shutil.copyfile(f, target / f.name)  # copyfile: writable copies of the read-only originals
    return root


MNIST_LAYOUT = {"mnist/*.gz": "MNIST/raw"}
PTB_LAYOUT = {"ptb/ptb.*.txt": "PennTreebank"}


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    """One writable copy of MNIST and PTB for the whole session (decoded once, then cached)."""
    return copy_into(tmp_path_factory.mktemp("psx-data"), {**MNIST_LAYOUT, **PTB_LAYOUT})


@pytest.fixture
def psx(tmp_path):
    """Run `psx ...` in a fresh temporary working folder (outputs/ lands there)."""

    def _run(*args, **kwargs):
        return run_psx(list(args), cwd=tmp_path, **kwargs)

    _run.cwd = tmp_path
    return _run


# Tests that run the real `psx` command, or another Python process (each imports torch: seconds),
# are the slow tier. `pytest -m "not slow"` is the fast tier; plain `pytest` (and .ci/run) runs both.
STARTS_A_PROCESS = {"run_psx", "psx_executable", "subprocess"}


def pytest_collection_modifyitems(items):
    for item in items:
        function = getattr(item, "function", None)
        code = function.__code__ if function is not None else None
        names = set(code.co_names) | set(code.co_varnames) if code is not None else set()
        if "psx" in getattr(item, "fixturenames", ()) or names & STARTS_A_PROCESS:
            item.add_marker(pytest.mark.slow)

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Real data for the tests comes from the user's data folder (PSX_DATA_DIR, in psx's own layout,
# i.e. torchvision's) or else from CI's copy beside the project, which keeps each set in a
# folder of its own (CI_FOLDERS); either way the tests copy the files into psx's layout.
SHARED_DATA = REPO.parent / "shared" / "data"
CI_FOLDERS = {"mnist": "mnist", "fashion_mnist": "fashion-mnist", "ptb": "ptb"}


def psx_executable() -> str:
    """The real installed `psx` console script of the environment running the tests."""
    beside_python = Path(sys.executable).parent / "psx"
    found = str(beside_python) if beside_python.exists() else shutil.which("psx")
    if not found:
        pytest.fail("the `psx` command is not installed; run `pip install -e .[dev]` first")
    return found


def run_psx(args, cwd, timeout=300, extra_env=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRA_")}
    for key, value in (extra_env or {}).items():  # None removes a variable
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return subprocess.run(
        [psx_executable(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def missing_data(message: str) -> "NoReturn":  # noqa: F821
    """Skip a test whose real data is not here; in CI (CI=true) missing data is a failure."""
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (CI=true, and CI must provide it)")
    pytest.skip(message)


def real_files(name: str, files: list[str] | None = None) -> dict[str, Path]:
    """{file name: path} of a downloadable data set's published files (all, or those named), from
    PSX_DATA_DIR in psx's layout or else CI's copy; skips, naming what to put where, without them."""
    from psx.data.registry import dataset_entry

    source = dataset_entry(name).source
    wanted = files or [file for file, _ in source.files]
    user_dir = os.environ.get("PSX_DATA_DIR")
    folders = [source.path(user_dir)] if user_dir else []
    folders += [SHARED_DATA / CI_FOLDERS[name]] if name in CI_FOLDERS else []
    for folder in folders:
        if all((folder / file).is_file() for file in wanted):
            return {file: folder / file for file in wanted}
    where = source.path(user_dir) if user_dir else f"$PSX_DATA_DIR/{source.folder}"
    missing_data(f"{name} not found: put {', '.join(wanted)} in {where} (torchvision's layout; "
                 f"`psx data download {name}` fetches them on a machine with internet)")


def copy_into(root: Path, *names: str) -> Path:
    """Writable copies of the named data sets' files under root, in psx's layout (skips without them)."""
    from psx.data.registry import dataset_entry

    for name in names:
        files = real_files(name)
        target = dataset_entry(name).source.path(root)
        target.mkdir(parents=True, exist_ok=True)
        for file, path in files.items():
            shutil.copyfile(path, target / file)  # copyfile: writable copies of possibly read-only originals
    return root


# Older names for the data sets, for tests that still pass them to copy_into.
MNIST_LAYOUT = "mnist"
PTB_LAYOUT = "ptb"


@pytest.fixture(scope="session")
def session_data_root(tmp_path_factory):
    """One writable data folder for the whole session; the fixtures below copy their set into it once."""
    return tmp_path_factory.mktemp("psx-data")


@pytest.fixture(scope="session")
def mnist_root(session_data_root):
    """A data folder holding MNIST (decoded once, then cached); skips without MNIST."""
    return copy_into(session_data_root, "mnist")


@pytest.fixture(scope="session")
def ptb_root(session_data_root):
    """A data folder holding Penn Treebank; skips without it."""
    return copy_into(session_data_root, "ptb")


@pytest.fixture(scope="session")
def data_root(mnist_root, ptb_root):
    """A data folder holding MNIST and PTB; skips unless both are there."""
    return mnist_root


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


@pytest.fixture
def one_thread():
    """In-process training on one torch thread (the test machine's cores are shared)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

"""Flower's deployment engine: a real SuperLink and two SuperNodes on localhost (--insecure), the
app `psx flower-app` writes, `flwr run`; the run folder it leaves is the simulation's, to the digit."""
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("flwr", reason='Flower is not installed: pip install -e ".[federated]"')

try:
    import tomllib
except ImportError:  # Python 3.10: Flower's own TOML reader
    import tomli as tomllib

from conftest import run_psx  # noqa: E402
from psx.cli import compose_checked  # noqa: E402
from psx.errors import PsxError  # noqa: E402
from psx.federated import app_project  # noqa: E402

BIN = Path(sys.executable).parent
# FedPer: the trunk goes through the SuperLink, the heads stay in each SuperNode's state-dir.
OVERRIDES = ["federated=fedper", "federated.clients=2", "federated.rounds=1", "device.num_threads=1",
             "trainer.progress=none"]


def test_the_app_names_psx_components_and_carries_the_run(tmp_path):
    assert app_project.main([str(tmp_path / "app"), "--run-dir", str(tmp_path / "run"), *OVERRIDES, "seed=3"],
                            compose_checked) == 0
    project = tomllib.loads((tmp_path / "app" / "pyproject.toml").read_text())
    app = project["tool"]["flwr"]["app"]
    assert app["components"] == {"serverapp": "psx.federated.deployment:server_app",
                                 "clientapp": "psx.federated.deployment:client_app"}
    assert app["config"] == {"psx-overrides": " ".join([*OVERRIDES, "seed=3"]), "psx-run-dir": str(tmp_path / "run")}


def test_settings_that_cannot_run_are_one_line_errors_before_any_file(tmp_path):
    with pytest.raises(PsxError, match="federated.alpha must be > 0"):
        app_project.main([str(tmp_path / "app"), "federated=fedavg", "federated.alpha=0"], compose_checked)
    with pytest.raises(PsxError, match="runs a federated arm"):
        app_project.main([str(tmp_path / "app"), "federated=none"], compose_checked)
    assert not (tmp_path / "app").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"flower-superlink exited with status {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    pytest.fail(f"flower-superlink did not listen on port {port} within {seconds:.0f} s")


@pytest.fixture(scope="module")
def deployed_run(tmp_path_factory):
    """(flwr run's result, the run folder, submit the app again) of one psx run on a SuperLink and
    two SuperNodes."""
    if not all((BIN / name).exists() for name in ("flower-superlink", "flower-supernode", "flwr")):
        pytest.skip("Flower's deployment CLI (flower-superlink, flower-supernode, flwr) is not installed beside "
                    'this Python: pip install -e ".[federated]"')
    root = tmp_path_factory.mktemp("flower")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRA_")}
    env.update(FLWR_HOME=str(root / "flwr-home"), FLWR_TELEMETRY_ENABLED="0")
    port = _free_port()
    (root / "flwr-home").mkdir()
    (root / "flwr-home" / "config.toml").write_text(
        f'[superlink]\ndefault = "test"\n\n[superlink.test]\naddress = "127.0.0.1:{port}"\ninsecure = true\n')
    started = []

    def start(*command: str, log: str) -> subprocess.Popen:
        with open(root / log, "w") as out:
            started.append(subprocess.Popen(command, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True))
        return started[-1]

    try:
        link = start(str(BIN / "flower-superlink"), "--insecure", "--disable-runtime-dependency-installation",
                     "--port", str(port), log="superlink.log")
        for partition in (0, 1):
            start(str(BIN / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{port}",
                  "--port", str(_free_port()),
                  "--node-config", f'partition-id={partition} state-dir="{root / "client-state"}"',
                  log=f"supernode-{partition}.log")
        made = run_psx(["flower-app", "app", "--run-dir", str(root / "run"), *OVERRIDES], cwd=root)
        assert made.returncode == 0, made.stderr
        _wait_for_port(port, link)

        def submit() -> subprocess.CompletedProcess:
            return subprocess.run([str(BIN / "flwr"), "run", "app", "test", "--stream"], cwd=root, env=env,
                                  capture_output=True, text=True, timeout=600)

        yield submit(), root / "run", submit
    finally:  # each started in a session of its own, with the SuperExec it starts: end the group
        for process in started:
            os.killpg(process.pid, signal.SIGTERM)
        for process in started:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


@pytest.mark.slow
def test_a_run_on_a_superlink_and_two_supernodes_completes_and_learns(deployed_run):
    result, run_dir, _ = deployed_run
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed", summary.get("error")
    assert summary["metrics"]["test/acc"] > 0.5  # ten classes: chance is 0.1
    assert summary["params/shared_across_clients"] < summary["params/unique"]  # the heads stayed home
    assert [int(r["round"]) for r in csv.DictReader((run_dir / "metrics.csv").open())] == [1]


@pytest.mark.slow
def test_the_deployed_run_is_the_simulated_run(deployed_run, psx):
    _, run_dir, _ = deployed_run
    simulated = psx("train", *OVERRIDES, f"hydra.run.dir={psx.cwd / 'sim'}", timeout=600)
    assert simulated.returncode == 0, simulated.stderr[-3000:]
    # same partition, same starting model, same seeded client streams: the same numbers
    assert (run_dir / "metrics.csv").read_text() == (psx.cwd / "sim" / "metrics.csv").read_text()


@pytest.mark.slow
def test_submitting_the_app_again_leaves_the_completed_run_as_it_was(deployed_run):
    _, run_dir, submit = deployed_run
    before = {name: (run_dir / name).read_bytes() for name in ("summary.json", "metrics.csv", "checkpoint.pt")}
    again = submit()
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "already completed" in (run_dir / "train.log").read_text()
    assert {name: (run_dir / name).read_bytes() for name in before} == before


class ConnectedNodes:
    """A grid as far as discover_partitions first looks at it: the SuperNodes that are connected."""

    def __init__(self, count: int):
        self.count = count

    def get_node_ids(self) -> list[int]:
        return list(range(100, 100 + self.count))

    def send_and_receive(self, messages, timeout):
        raise AssertionError("no client should be asked anything")


def test_more_supernodes_than_clients_is_one_line_before_any_message():
    from psx.federated.run import discover_partitions

    with pytest.raises(PsxError, match="3 SuperNodes are connected for federated.clients=2; start one per partition-id"):
        discover_partitions(ConnectedNodes(3), clients=2, timeout=1.0)

"""A real single-node SLURM for the tests: munged, slurmctld and slurmd started in a temporary folder.

Debian's packages (slurmctld, slurmd, slurm-client, munge) as they come, no systemd, no cgroups and
no accounting database, as on a small cluster someone set up by hand. Everything the daemons write
(state, spool, logs, pid files, the munge socket) lives in the folder, and clients find the cluster
through SLURM_CONF, so nothing outside the folder changes and several test sessions do not collide
as long as their ports differ."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scancel", "scontrol", "sinfo")
MUNGE_KEY = Path("/etc/munge/munge.key")

SLURM_CONF = """\
ClusterName=psxtest
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser={user}
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge.socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MinJobAge=3600
KillWait=30
SchedulerParameters=sched_interval=1
MpiDefault=none
NodeName=localhost CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


class SlurmUnavailable(RuntimeError):
    """The cluster cannot start here (no packages, no munge key, not allowed): the tests skip."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlurmCluster:
    """`with SlurmCluster(folder) as cluster:` a running one-node cluster; `cluster.env` for clients."""

    def __init__(self, root: Path, cpus: int = 2, memory_mb: int = 4096):
        self.root = Path(root)
        self.cpus, self.memory_mb = cpus, memory_mb
        self.env = dict(os.environ, SLURM_CONF=str(self.root / "slurm.conf"))
        self.started_in_s: float | None = None
        self._daemons: list[subprocess.Popen] = []

    def __enter__(self) -> "SlurmCluster":
        missing = [p for p in DAEMONS + CLIENTS if shutil.which(p) is None and not Path("/usr/sbin", p).exists()]
        if missing:
            raise SlurmUnavailable(f"not installed: {' '.join(missing)} (apt-get install slurmctld slurmd slurm-client munge)")
        if os.geteuid() != 0:
            raise SlurmUnavailable("slurmd must run as root to start jobs")
        if not MUNGE_KEY.is_file():
            raise SlurmUnavailable(f"no munge key at {MUNGE_KEY}")
        started = time.perf_counter()
        try:
            self._start()
            self._wait_until_idle(timeout_s=30)
        except BaseException:
            self.stop()
            raise
        self.started_in_s = time.perf_counter() - started
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _start(self) -> None:
        for sub in ("state", "spool"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "slurm.conf").write_text(SLURM_CONF.format(
            root=self.root, user="root", cpus=self.cpus, memory_mb=self.memory_mb,
            ctld_port=_free_port(), slurmd_port=_free_port()))
        self._spawn(["munged", "-F", "--force", f"--socket={self.root}/munge.socket",
                     f"--key-file={MUNGE_KEY}", f"--pid-file={self.root}/munged.pid",
                     f"--log-file={self.root}/munged.log", f"--seed-file={self.root}/munged.seed"])
        self._wait_for(lambda: (self.root / "munge.socket").exists(), "munged", 10)
        self._spawn([self._daemon("slurmctld"), "-D", "-i"])
        self._wait_for(lambda: self._run(["scontrol", "ping"]).returncode == 0
                       and "UP" in self._run(["scontrol", "ping"]).stdout, "slurmctld", 15)
        self._spawn([self._daemon("slurmd"), "-D", "-N", "localhost"])

    @staticmethod
    def _daemon(name: str) -> str:
        return shutil.which(name) or f"/usr/sbin/{name}"

    def _spawn(self, argv: list[str]) -> None:
        log = open(self.root / f"{Path(argv[0]).name}.out", "ab")
        self._daemons.append(subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                              start_new_session=True))

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=30)

    def _wait_for(self, ready, what: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            dead = [p.args[0] for p in self._daemons if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise SlurmUnavailable(f"{what} did not start ({'exited: ' + ', '.join(dead) if dead else 'timed out'}); "
                                       f"logs in {self.root}")
            time.sleep(0.1)

    def _wait_until_idle(self, timeout_s: float) -> None:
        self._wait_for(lambda: self._run(["sinfo", "-h", "-o", "%T"]).stdout.strip() == "idle", "slurmd", timeout_s)

    def squeue(self, *args: str) -> str:
        return self._run(["squeue", "-h", *args]).stdout

    def command(self, *argv: str) -> subprocess.CompletedProcess:
        result = self._run(list(argv))
        if result.returncode:
            raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip()}")
        return result

    def stop(self) -> None:
        """Cancel what is left, then stop the daemons (their process groups, so job steps go too)."""
        if self._daemons and all(p.poll() is None for p in self._daemons):
            self._run(["scancel", "--full", "--user", "root"])
        for process in reversed(self._daemons):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in reversed(self._daemons):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self._daemons.clear()

"""A real one-node Slurm for the tests: munged, slurmctld and slurmd from Debian's packages
(slurm-wlm, munge; `.ci/run` installs them), configured for this machine and stopped after.

The configuration needs no cgroups (proctrack/linuxproc, task/none), lets two 1-CPU tasks run at
once (select/cons_tres with cores as the resource), allows requeue, and writes a record of every
finished job to a completion log (jobcomp/filetxt: `sacct` would need slurmdbd)."""
from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sinfo", "squeue", "sbatch", "srun", "scontrol", "scancel", "munge")
SBIN = ("/usr/sbin", "/usr/bin", "/sbin")


@dataclass
class Cluster:
    conf: Path
    jobcomp: Path
    logs: Path

    def records(self, array_job_id: str | None = None) -> list[dict]:
        """The completion log's job records (key=value words), of one array job if given."""
        if not self.jobcomp.exists():
            return []
        records = [dict(word.split("=", 1) for word in line.split() if "=" in word)
                   for line in self.jobcomp.read_text().splitlines() if line.strip()]
        return [r for r in records if array_job_id is None or r.get("ArrayJobId") == array_job_id]

    def record_lines(self, array_job_id: str) -> list[str]:
        return [line for line in self.jobcomp.read_text().splitlines()
                if f" ArrayJobId={array_job_id} " in f" {line} "]


def _binary(name: str) -> str | None:
    found = (f"{d}/{name}" for d in SBIN if os.access(f"{d}/{name}", os.X_OK))
    return shutil.which(name) or next(found, None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_line() -> str:
    """This machine as slurmd measures it (its real CPUs, cores and memory)."""
    out = subprocess.run([_binary("slurmd"), "-C"], capture_output=True, text=True, check=True).stdout
    return next(line for line in out.splitlines() if line.startswith("NodeName="))


def _config(root: Path, host: str) -> str:
    return "\n".join([
        "ClusterName=poolbench-test", f"SlurmctldHost={host}",
        f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
        "SlurmUser=root", "SlurmdUser=root", "AuthType=auth/munge",
        f"StateSaveLocation={root}/state", f"SlurmdSpoolDir={root}/spool",
        f"SlurmctldPidFile={root}/slurmctld.pid", f"SlurmdPidFile={root}/slurmd.pid",
        f"SlurmctldLogFile={root}/log/slurmctld.log", f"SlurmdLogFile={root}/log/slurmd.log",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/filetxt", f"JobCompLoc={root}/jobcomp.txt",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
        "MpiDefault=none", "ReturnToService=2", "JobRequeue=1", "KillWait=5",
        f"{_node_line()} State=UNKNOWN",
        f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP", "",
    ])


def _munge_works() -> bool:
    munge = _binary("munge")
    return munge is not None and subprocess.run([munge, "-n"], capture_output=True).returncode == 0


def _start_munged() -> int | None:
    """Start munged as its user unless one answers; the pid of the one started here."""
    if _munge_works():
        return None
    run_dir = Path("/run/munge")
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.chown(run_dir, "munge", "munge")
    subprocess.run(["runuser", "-u", "munge", "--", _binary("munged")], check=True)
    deadline = time.monotonic() + 10
    while not _munge_works():
        if time.monotonic() > deadline:
            pytest.fail("munged started but `munge -n` does not answer")
        time.sleep(0.1)
    pid_file = run_dir / "munged.pid"
    return int(pid_file.read_text()) if pid_file.exists() else None


def _idle(env) -> bool:
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, env=env)
    return out.returncode == 0 and out.stdout.split() == ["idle"]


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A running one-node Slurm; SLURM_CONF points every client (and submitit) at it."""
    missing = [b for b in DAEMONS + CLIENTS if _binary(b) is None]
    if missing:
        pytest.skip(f"Slurm is not installed ({', '.join(missing)} missing): "
                    "apt-get install slurm-wlm munge (as .ci/run does)")
    if os.geteuid() != 0:
        pytest.skip("starting slurmctld and slurmd for the test needs root")
    if importlib.util.find_spec("submitit") is None:
        pytest.skip("submitit not installed (pip install 'poolbench[slurm]')")
    root = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool", "log"):
        (root / sub).mkdir()
    conf = root / "slurm.conf"
    conf.write_text(_config(root, socket.gethostname().split(".")[0]))
    munged = _start_munged()
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)
    try:
        subprocess.run([_binary("slurmctld"), "-f", str(conf)], check=True)
        subprocess.run([_binary("slurmd"), "-f", str(conf)], check=True)
        deadline = time.monotonic() + 60
        while not _idle(os.environ):
            if time.monotonic() > deadline:
                logs = "".join(p.read_text()[-2000:] for p in (root / "log").iterdir())
                pytest.fail(f"the Slurm node did not become idle in 60 s:\n{logs}")
            time.sleep(0.5)
        yield Cluster(conf=conf, jobcomp=root / "jobcomp.txt", logs=root / "log")
    finally:
        subprocess.run(["scancel", "--user", "root"], capture_output=True)
        subprocess.run(["scontrol", "shutdown"], capture_output=True)
        for pid_file in (root / "slurmd.pid", root / "slurmctld.pid"):
            _stop(pid_file)
        if munged:
            os.kill(munged, signal.SIGTERM)
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old


def _stop(pid_file: Path) -> None:
    """Wait for a daemon that `scontrol shutdown` stopped; end it if it is still there."""
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text().strip() or 0)
    deadline = time.monotonic() + 10
    while pid and time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    if pid:
        os.kill(pid, signal.SIGTERM)

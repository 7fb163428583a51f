"""A one-node SLURM cluster on this machine, for tests: `with slurm_cluster() as cluster: ...`.

It starts its own munged (private socket and key in a temporary folder), slurmctld and slurmd in
the foreground as child processes, and stops exactly those processes (by pid) on exit. Job steps
(`srun` inside a batch job) read the default configuration path, not SLURM_CONF, so the cluster's
slurm.conf is written to /etc/slurm/slurm.conf for the cluster's lifetime; a slurm.conf already
there is moved aside and put back. There is no accounting (no slurmdbd, so no sacct): finished jobs
stay visible to squeue for an hour (MinJobAge), which is how Snakemake's SLURM executor learns that
they finished (`--slurm-status-command squeue`).

Needs root (the daemons), the Debian packages slurmctld, slurmd, slurm-client and munge, and no
other slurmctld running on this machine. `unavailable()` says what is missing, or None.
"""
from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CONF = Path("/etc/slurm/slurm.conf")
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "sinfo", "scontrol", "scancel")
PARTITION = "lossbench"


@dataclass
class Cluster:
    partition: str
    node: str
    cpus: int
    memory_mb: int
    root: Path  # state, spool, logs and munge's socket

    def jobs(self) -> list[dict]:
        """Every job the cluster knows (finished ones too, for MinJobAge): id, name, state, partition."""
        out = _run(["squeue", "--states=all", "--noheader", "--format=%i|%j|%T|%P"]).stdout
        return [dict(zip(("id", "name", "state", "partition"), line.split("|"))) for line in out.splitlines() if line]

    def job(self, job_id: str) -> dict:
        """`scontrol show job`'s fields of one job (TRES, TimeLimit, MinMemoryNode, Comment, ...)."""
        out = _run(["scontrol", "show", "job", "--oneliner", str(job_id)]).stdout
        return dict(re.findall(r"(\S+?)=(\S*)", out))

    def logs(self) -> str:
        """The daemons' logs, for a failing test's message."""
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted((self.root / "log").glob("*")))


def _which(name: str) -> str | None:
    """A binary's path; the daemons live in /usr/sbin, which a non-login PATH may lack."""
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))


def unavailable() -> str | None:
    """Why no test cluster can start here, or None."""
    missing = [b for b in BINARIES if _which(b) is None]
    if missing:
        return (f"SLURM/munge binaries missing: {', '.join(missing)} "
                "(apt-get install slurmctld slurmd slurm-client munge)")
    if os.geteuid() != 0:
        return "starting slurmctld/slurmd needs root"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "no 'munge' user (the munge package creates it)"
    if _running("slurmctld"):
        return "a slurmctld already runs on this machine; not replacing its /etc/slurm/slurm.conf"
    return None


def _running(name: str) -> bool:
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == name:
                return True
        except OSError:
            continue
    return False


def _run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, **kw)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_memory_mb() -> int:
    """The memory slurmd itself detects (`slurmd -C`), so the node is not drained for claiming more."""
    out = _run([_which("slurmd"), "-C"]).stdout
    for field in out.split():
        if field.startswith("RealMemory="):
            return int(field.split("=", 1)[1])
    with open("/proc/meminfo") as f:
        return int(f.readline().split()[1]) // 1024


def _conf(root: Path, node: str, cpus: int, memory_mb: int) -> str:
    return f"""# lossbench test cluster ({root}); written by tests/cluster/slurm_cluster.py, removed afterwards
ClusterName=lossbench
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge=3600
InactiveLimit=0
KillWait=5
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


@contextmanager
def slurm_cluster(ready_timeout: float = 60.0):
    """Start the one-node cluster, yield a Cluster once its node is idle, stop it afterwards."""
    reason = unavailable()
    if reason:
        raise RuntimeError(reason)
    node = socket.gethostname().split(".")[0]
    cpus = len(os.sched_getaffinity(0))
    memory_mb = _node_memory_mb()
    # not under pytest's 0700 tmp_path: munged runs as user munge and must reach its socket
    root = Path(tempfile.mkdtemp(prefix="lossbench-slurm-"))
    root.chmod(0o755)
    munge = pwd.getpwnam("munge")
    for sub in ("state", "spool", "log", "munge"):
        (root / sub).mkdir()
    (root / "munge").chmod(0o755)  # munged wants its socket's folder searchable by all
    key = root / "munge" / "munge.key"  # a private key: /etc/munge is left alone
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    for p in (root / "munge", key):
        os.chown(p, munge.pw_uid, munge.pw_gid)

    backup = CONF.with_name(f"slurm.conf.lossbench-backup-{os.getpid()}") if CONF.exists() else None
    made_dir = not CONF.parent.exists()
    procs: list[subprocess.Popen] = []
    try:
        if backup:
            CONF.rename(backup)
        CONF.parent.mkdir(parents=True, exist_ok=True)
        CONF.write_text(_conf(root, node, cpus, memory_mb))

        def start(name, cmd, **kw):
            log = open(root / "log" / f"{name}.out", "w")
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True, **kw))
            log.close()

        start("munged", [_which("munged"), "--foreground", f"--socket={root}/munge/munge.socket",
                         f"--key-file={key}", f"--pid-file={root}/munge/munged.pid",
                         f"--seed-file={root}/munge/munged.seed"],
              user=munge.pw_uid, group=munge.pw_gid, extra_groups=[])
        _wait(lambda: (root / "munge" / "munge.socket").exists(), 15, "munged", root)
        start("slurmctld", [_which("slurmctld"), "-D", "-f", str(CONF)])
        start("slurmd", [_which("slurmd"), "-D", "-f", str(CONF)])
        _wait(lambda: _run(["sinfo", "--noheader", "--format=%T", f"--partition={PARTITION}"]).stdout.strip()
              == "idle", ready_timeout, "the node to become idle", root)
        yield Cluster(PARTITION, node, cpus, memory_mb, root)
    finally:
        if len(procs) == 3:  # a failed test may leave jobs running: end them while slurmd still can
            _run(["scancel", f"--partition={PARTITION}"])
            try:
                _wait(lambda: not _run(["squeue", "--noheader", "--states=RUNNING,PENDING,COMPLETING"]).stdout.strip(),
                      20, "cancelled jobs to end", root)
            except RuntimeError:
                pass
        for proc in reversed(procs):  # slurmd, slurmctld, munged: only the processes started here
            _stop(proc)
        if CONF.exists():
            CONF.unlink()
        if backup:
            backup.rename(CONF)
        elif made_dir:
            CONF.parent.rmdir()
        shutil.rmtree(root, ignore_errors=True)


def _wait(ready, timeout, what, root):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if ready():
                return
        except subprocess.TimeoutExpired:
            pass
        time.sleep(0.5)
    logs = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in sorted((root / "log").glob("*")))
    raise RuntimeError(f"test SLURM cluster: timed out after {timeout:.0f} s waiting for {what}\n{logs}")

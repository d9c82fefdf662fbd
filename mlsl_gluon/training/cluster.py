"""Starting the processes of a ``dist_sync`` cluster: one host's part of it, or all of it on 127.0.0.1.

A cluster is one scheduler, S servers and N workers (see :mod:`.distributed` for the roles and
the ``DMLC_*`` variables). :func:`run_cluster_part` starts what one host contributes: its
workers, and on the host chosen to serve, the scheduler and the servers too. Workers may start
before the scheduler: ps-lite connects them when it comes up, so the hosts need no start order.
A ps-lite cluster ends when its workers exit, so a driver that runs several trainings (one per
table row) starts one cluster per training, each on its own port (``tools/reproduce.py``).
:func:`run_local_cluster` is the whole cluster on the loopback address (tests, benchmarks).
"""
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
#: Command that turns a process with ``DMLC_ROLE`` = scheduler/server into that role.
SERVER_COMMAND = (sys.executable, "-c", "import mxnet")


def free_port(host=LOOPBACK):
    """A TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def dist_environment(role, *, root_uri, root_port, num_workers, num_servers=1, node_host=None):
    """The ``DMLC_*`` environment variables of one parameter-server process.

    Parameters
    ----------
    role : {'scheduler', 'server', 'worker'}
    root_uri : str
        Scheduler IP address.
    root_port : int
        Scheduler port.
    num_workers, num_servers : int
        Cluster size.
    node_host : str or None
        Address this process binds and announces (``DMLC_NODE_HOST``); None lets ps-lite pick.

    Returns
    -------
    dict of str -> str
    """
    if role not in ("scheduler", "server", "worker"):
        raise ValueError(f"unknown parameter-server role {role!r}")
    env = {
        "DMLC_ROLE": role,
        "DMLC_PS_ROOT_URI": str(root_uri),
        "DMLC_PS_ROOT_PORT": str(int(root_port)),
        "DMLC_NUM_SERVER": str(int(num_servers)),
        "DMLC_NUM_WORKER": str(int(num_workers)),
    }
    if node_host is not None:
        env["DMLC_NODE_HOST"] = str(node_host)
    return env


@dataclass(frozen=True)
class ClusterAddress:
    """The scheduler every process of one cluster reports to, and the cluster's size.

    Attributes
    ----------
    root_uri : str
        The scheduler's address, as every host reaches it.
    root_port : int
        The scheduler's port.
    num_workers : int
        Workers of the whole cluster (all hosts).
    num_servers : int
        Servers of the cluster.
    """

    root_uri: str
    root_port: int
    num_workers: int
    num_servers: int = 1


def run_cluster_part(worker_argv, address, *, local_workers=1, serve=False, node_host=None, timeout=None,
                     env=None, cwd=None, log_dir=None):
    """Run this host's processes of one ``dist_sync`` cluster until they have all exited.

    Every process is a subprocess; all of them are killed when this function returns or
    raises, whatever happened.

    Parameters
    ----------
    worker_argv : sequence of str
        Command every worker runs (the same for all; ranks come from the kvstore).
    address : ClusterAddress
        The cluster's scheduler and size.
    local_workers : int
        Workers started here.
    serve : bool
        Also start the scheduler and the servers here (exactly one host of the cluster does).
    node_host : str or None
        This host's address as the other hosts reach it (``DMLC_NODE_HOST``); None lets
        ps-lite pick an interface.
    timeout : float or None
        Seconds the processes may take; on expiry everything is killed. None waits for ever.
    env : dict or None
        Extra environment for all processes (on top of ``os.environ``).
    cwd : str or None
        Working directory of the workers.
    log_dir : str or None
        Where each process's combined stdout/stderr go (``<role><i>.log``); a temporary
        directory if None.

    Returns
    -------
    list of str
        The output of each local worker.

    Raises
    ------
    TimeoutError
        Naming the processes still running after ``timeout`` seconds.
    RuntimeError
        When a process exits with a non-zero status (with the end of its output).
    """
    log_dir = log_dir or tempfile.mkdtemp(prefix="mlsl-dist-")
    base = dict(os.environ)
    base.update(env or {})
    base.setdefault("OMP_NUM_THREADS", "1")

    def role_env(role):
        out = dict(base)
        out.update(dist_environment(role, root_uri=address.root_uri, root_port=address.root_port,
                                    num_workers=address.num_workers, num_servers=address.num_servers,
                                    node_host=node_host))
        return out

    procs = []

    def launch(name, argv, role):
        log = os.path.join(log_dir, f"{name}.log")
        procs.append((name, log, _start(argv, role_env(role), log, cwd)))

    try:
        if serve:
            launch("scheduler", SERVER_COMMAND, "scheduler")
            for i in range(address.num_servers):
                launch(f"server{i}", SERVER_COMMAND, "server")
        for i in range(local_workers):
            launch(f"worker{i}", worker_argv, "worker")
        logger.info("dist_sync cluster %s:%d (%d worker(s) in all): %s started here, logs in %s",
                    address.root_uri, address.root_port, address.num_workers,
                    f"scheduler, {address.num_servers} server(s) and {local_workers} worker(s)" if serve
                    else f"{local_workers} worker(s)", log_dir)
        _wait_all(procs, None if timeout is None else time.monotonic() + timeout)
        return [_tail(log, limit=1 << 20) for name, log, _ in procs if name.startswith("worker")]
    finally:
        for _, _, proc in procs:
            if proc.poll() is None:
                proc.kill()
        for _, _, proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                logger.error("process %d did not exit after kill", proc.pid)


def run_local_cluster(worker_argv, num_workers, *, num_servers=1, timeout=120.0, env=None,
                      cwd=None, log_dir=None):
    """Run a whole ``dist_sync`` cluster on 127.0.0.1 (a free port): scheduler, servers and workers.

    Parameters and result as :func:`run_cluster_part` (``num_workers`` workers, all local).
    """
    address = ClusterAddress(LOOPBACK, free_port(), num_workers, num_servers)
    return run_cluster_part(worker_argv, address, local_workers=num_workers, serve=True, node_host=LOOPBACK,
                            timeout=timeout, env=env, cwd=cwd, log_dir=log_dir)


def _start(argv, env, log_path, cwd):
    handle = open(log_path, "wb")
    try:
        return subprocess.Popen(list(argv), env=env, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT)
    finally:
        handle.close()  # the child keeps its own descriptor


def _tail(path, limit=3000):
    with open(path, "rb") as handle:
        return handle.read()[-limit:].decode("utf-8", "replace")


def _wait_all(procs, deadline):
    pending = list(procs)
    while pending:
        for item in list(pending):
            name, log, proc = item
            code = proc.poll()
            if code is None:
                continue
            pending.remove(item)
            if code != 0:
                raise RuntimeError(f"dist_sync {name} exited with status {code}; end of {log}:\n{_tail(log)}")
        if pending and deadline is not None and time.monotonic() > deadline:
            names = ", ".join(name for name, _, _ in pending)
            raise TimeoutError(f"dist_sync cluster timed out; still running: {names}")
        time.sleep(0.1)

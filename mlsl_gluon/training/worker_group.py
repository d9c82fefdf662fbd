"""The ``dist_sync`` workers of one run as a group sharing rank 0's run folder.

Step 1 of a round (pseudo-labels) is split over the workers: worker r of n infers the target
images r, r + n, ... into its own cache shard in rank 0's round folder, every worker waits for
all shards, rank 0 merges the shards' threshold accumulators and writes the labels, and every
worker then trains on that one complete set. This needs a folder every worker sees at the same
path (rank 0's ``--out``: one host, or a network file system on a cluster); :meth:`WorkerGroup.join`
checks that before anything runs and says what to do when it is not so.

Synchronisation uses the kvstore's barrier, which waits for every worker of the cluster: each
worker must make exactly the same sequence of calls. That is why the workers agree on one
resume state when they join (:func:`agree_on_state`) instead of each following its own
checkpoint: a worker that skipped step 1 while another ran it would block both for ever.
"""
import json
import logging
import os
import socket
import time
from pathlib import Path

import mxnet as mx

from .inputs import InputError

logger = logging.getLogger(__name__)

#: Seconds a file written by another worker before a barrier may take to become visible here
#: (network file systems cache directory entries for a while).
VISIBILITY_TIMEOUT = 30.0
#: First kvstore key used to hand rank 0's join token to every worker (parameter keys are the
#: parameter indices of the trainer, far below).
TOKEN_KEY = 1 << 30
_broadcasts_of_this_process = [0]


class SharedFolderError(InputError):
    """The workers do not see one shared run folder, or resumed from incompatible states
    (an input error: `train` reports it without a traceback)."""


def worker_folder(out, rank):
    """Run folder of worker ``rank`` under the shared ``--out``: rank 0 owns ``out`` itself."""
    return Path(out) if rank == 0 else Path(out) / f"worker{rank}"


def shared_folder(run_path, rank):
    """The shared ``--out`` of the worker with run folder ``run_path`` (see :func:`worker_folder`)."""
    return Path(run_path) if rank == 0 else Path(run_path).parent


def agree_on_state(states):
    """The one state every worker continues from, given each worker's own resume state.

    Step 1 does not change the parameters, so a worker whose checkpoint says "round r, step 1
    done" (``phase='train'`` at epoch 0, iteration 0) holds the same weights as one that still
    has to run step 1 of round r: both run it (its cached shards make that quick).

    Parameters
    ----------
    states : list of dict
        Checkpoint state of each rank (``round``, ``phase``, ``epoch``, ``iteration``, ...).

    Returns
    -------
    dict

    Raises
    ------
    SharedFolderError
        When the states differ in any other way (they would make different numbers of steps).
    """
    first = states[0]
    if all(s == first for s in states):
        return dict(first)

    def step_one_of_round(state):
        start = state.get("phase") == "train" and not state.get("epoch") and not state.get("iteration")
        return dict(state, phase="pseudo") if start else dict(state)

    pseudo = [step_one_of_round(s) for s in states]
    if all(s == pseudo[0] for s in pseudo) and pseudo[0].get("phase") == "pseudo":
        return pseudo[0]
    described = "; ".join(f"rank {r}: {json.dumps(s, sort_keys=True)}" for r, s in enumerate(states))
    raise SharedFolderError(
        f"the workers resumed from different states ({described}). All workers hold the same "
        f"parameters, so copy checkpoints/latest.params of the most advanced worker over the others' "
        f"and resume again")


class KVStoreChannel:
    """Barriers and broadcasts between the workers through their ``dist_*`` kvstore."""

    def __init__(self, store):
        self.store = store

    def barrier(self):
        """Wait until every worker got here."""
        self.store._barrier()

    def broadcast(self, value):
        """Rank 0's ``value`` (an int below 2**24), on every worker."""
        # A fresh key per call: init sends rank 0's value to the servers and is itself a barrier.
        key = TOKEN_KEY + _broadcasts_of_this_process[0]
        _broadcasts_of_this_process[0] += 1
        self.store.init(key, mx.nd.array([value]))
        common = mx.nd.zeros((1,))
        self.store.pull(key, out=common)
        return int(common.asscalar())


class WorkerGroup:
    """This process's place among the run's workers.

    Parameters
    ----------
    rank, num_workers : int
    root : str or Path
        The shared folder (rank 0's run folder).
    channel : KVStoreChannel or None
        Barriers and broadcasts between the workers (None for a single worker).
    """

    def __init__(self, rank, num_workers, root, channel=None):
        if num_workers > 1 and channel is None:
            raise ValueError("a group of several workers needs a channel (their distributed kvstore)")
        self.rank, self.num_workers = int(rank), int(num_workers)
        self.root, self.channel = Path(root), channel

    @classmethod
    def of_run(cls, kvstore, run_path):
        """The group of a worker with run folder ``run_path`` (one worker unless ``dist_*``)."""
        if isinstance(kvstore, mx.kvstore.KVStore) and "dist" in kvstore.type:
            return cls(kvstore.rank, kvstore.num_workers, shared_folder(run_path, kvstore.rank),
                       KVStoreChannel(kvstore))
        return cls(0, 1, run_path)

    @property
    def shard(self):
        """``(rank, num_workers)``: this worker's share of the target set and of every batch."""
        return self.rank, self.num_workers

    def barrier(self):
        """Wait until every worker got here (no-op for one worker)."""
        if self.num_workers > 1:
            self.channel.barrier()

    def shared_path(self, own_path, own_root):
        """``own_path`` (inside this worker's run folder ``own_root``) moved into the shared folder."""
        return self.root / Path(own_path).relative_to(own_root)

    def rank0_file(self, path, own_root, timeout=VISIBILITY_TIMEOUT):
        """Rank 0's copy of a file of this worker's run folder (other paths are returned as they are).

        Every worker writes its own round checkpoints, with equal parameters but not always
        equal bytes; the pseudo-label caches of all shards must name one file's digest.
        """
        try:
            shared = self.shared_path(path, own_root)
        except ValueError:  # not inside the run folder: the same path on every host
            return Path(path)
        return self.wait_for_file(shared, timeout)

    def join(self, state, timeout=VISIBILITY_TIMEOUT):
        """Check that every worker sees the shared folder, and agree on the state to resume from.

        Every worker writes ``<root>/workers/rank<r>.json`` (host, pid, the join's token, its
        state) and then looks for every other worker's file of this join.

        Parameters
        ----------
        state : dict
            This worker's resume state.
        timeout : float
            Seconds to wait for the others' files to appear.

        Returns
        -------
        dict
            The state all workers continue from (see :func:`agree_on_state`).

        Raises
        ------
        SharedFolderError
            Naming the folder and the workers whose file is missing.
        """
        if self.num_workers == 1:
            return dict(state)
        token = self.channel.broadcast(int.from_bytes(os.urandom(3), "little"))
        folder = self.root / "workers"
        folder.mkdir(parents=True, exist_ok=True)
        mine = {"rank": self.rank, "host": socket.gethostname(), "pid": os.getpid(), "token": token,
                "state": state}
        tmp = folder / f".rank{self.rank}.json.tmp"
        tmp.write_text(json.dumps(mine))
        os.replace(tmp, folder / f"rank{self.rank}.json")
        self.barrier()
        markers = self._read_markers(folder, token, timeout)
        missing = [r for r, m in enumerate(markers) if m is None]
        if missing:
            seen = [f"rank {r} ({m['host']})" for r, m in enumerate(markers) if m is not None]
            raise SharedFolderError(
                f"worker {self.rank} on {socket.gethostname()} does not see the files of worker(s) "
                f"{', '.join(map(str, missing))} in {folder} after {timeout:.0f} s "
                f"(it sees {', '.join(seen)}). "
                f"The {self.num_workers} workers must share the output folder: put --out on a file "
                f"system every worker host mounts at the same path (e.g. NFS) and give every worker "
                f"the same --out; or label without a cluster: `mlsl-gluon pseudo-label --shard i/n` "
                f"on each host, copy the shards/ and cache files into one folder, then --combine")
        # Sharing is symmetric (A sees B's file iff B sees A's), so either every worker passes
        # this check or every worker stops here with its own message.
        return agree_on_state([m["state"] for m in markers])

    def _read_markers(self, folder, token, timeout):
        deadline = time.monotonic() + timeout
        markers = [None] * self.num_workers
        while True:
            for r in range(self.num_workers):
                if markers[r] is None:
                    markers[r] = _marker(folder / f"rank{r}.json", token)
            if all(m is not None for m in markers) or time.monotonic() > deadline:
                return markers
            time.sleep(0.5)

    def map_reduce(self, work, reduce, result_file, timeout=VISIBILITY_TIMEOUT):
        """``work()`` on every worker, then ``reduce()`` on rank 0 alone; every worker returns
        the JSON ``reduce`` wrote to ``result_file``.

        For step 1: ``work`` labels this worker's shard into the shared folder, ``reduce``
        combines every shard's thresholds and writes the labels and ``stats.json``.
        """
        work()
        self.barrier()  # every shard finished (and closed its files)
        if self.rank == 0:
            reduce()
        self.barrier()  # the result is written
        return json.loads(self.wait_for_file(result_file, timeout).read_text())

    def wait_for_file(self, path, timeout=VISIBILITY_TIMEOUT):
        """Wait until ``path``, written by another worker before a barrier, is visible here."""
        deadline = time.monotonic() + timeout
        path = Path(path)
        while not path.is_file():
            if time.monotonic() > deadline:
                raise SharedFolderError(f"worker {self.rank}: {path} written by worker 0 is not visible "
                                        f"after {timeout:.0f} s; is {self.root} shared by all workers?")
            time.sleep(0.5)
        return path


def _marker(path, token):
    try:
        marker = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return marker if marker.get("token") == token else None

"""Data-parallel training over several processes or hosts with MXNet's ``dist_sync`` kvstore.

MXNet's parameter server has three roles: one scheduler, S servers and N workers. Every process
reads its role and the scheduler's address from ``DMLC_*`` environment variables; a server or
scheduler process runs its loop as soon as it imports ``mxnet`` (so ``python -c "import mxnet"``
is a complete server), a worker is the ordinary training command with ``--kvstore dist_sync``.
``mxnet.tools.launch`` would start them, but it needs the dmlc tracker that the pip wheel lacks;
:mod:`.cluster` starts them instead (one host's part, or a whole cluster on 127.0.0.1).

With ``dist_sync`` each worker trains on its own shard of the data (:func:`shard_indices`, all
shards the same length so every worker makes the same number of steps); the servers sum the
gradients of all workers at every step and each worker applies the same update, so all workers
hold identical parameters. Step 1 of every round (pseudo-labels) is sharded over the workers
too, in a run folder they share: see :mod:`.worker_group`. Worker ranks are assigned by the
scheduler: read them with :func:`worker_rank` / :func:`num_workers` from a trainer, or from
``process_kvstore('dist_sync')`` (``.rank``, ``.num_workers``: the one kvstore of this process)
before building the trainer.

Launching on several hosts
--------------------------
Pick a scheduler host A (IP ``10.0.0.1`` below) and a free TCP port (``9091``). Every process
gets these variables::

    DMLC_PS_ROOT_URI=10.0.0.1   # the scheduler's address, identical everywhere
    DMLC_PS_ROOT_PORT=9091      # the scheduler's port, identical everywhere
    DMLC_NUM_SERVER=1           # number of server processes in the cluster
    DMLC_NUM_WORKER=2           # number of worker processes in the cluster
    DMLC_NODE_HOST=<this host's IP as the others reach it>

and its role in ``DMLC_ROLE``. Start, in any order:

1. on host A, the scheduler::

       DMLC_ROLE=scheduler DMLC_PS_ROOT_URI=10.0.0.1 DMLC_PS_ROOT_PORT=9091 \\
       DMLC_NUM_SERVER=1 DMLC_NUM_WORKER=2 DMLC_NODE_HOST=10.0.0.1 python -c "import mxnet"

2. on any host (A is fine), each server (``DMLC_NUM_SERVER`` of them)::

       DMLC_ROLE=server DMLC_PS_ROOT_URI=10.0.0.1 DMLC_PS_ROOT_PORT=9091 \\
       DMLC_NUM_SERVER=1 DMLC_NUM_WORKER=2 DMLC_NODE_HOST=<its IP> python -c "import mxnet"

3. on each worker host (``DMLC_NUM_WORKER`` of them), the same training command with the
   distributed kvstore, the same config and data paths and the same ``--out``, a folder every
   worker host mounts at that path::

       DMLC_ROLE=worker DMLC_PS_ROOT_URI=10.0.0.1 DMLC_PS_ROOT_PORT=9091 \\
       DMLC_NUM_SERVER=1 DMLC_NUM_WORKER=2 DMLC_NODE_HOST=<its IP> \\
       mlsl-gluon train ... --kvstore dist_sync

The servers and the scheduler exit when all workers have finished. The batch size is per
worker: the global batch is ``batch size x DMLC_NUM_WORKER``. The port and the workers' ports
(chosen by ps-lite) must be reachable between the hosts. Use ``dist_device_sync`` to also sum
the gradients of several GPUs of a host on that host first.
"""
import atexit
import logging

import mxnet as mx
import numpy as np

logger = logging.getLogger(__name__)


def shard_indices(n, rank, num_workers):
    """Sample indices of worker ``rank`` out of ``num_workers``: strided, all shards equal length.

    Worker ``r`` gets ``r, r + W, r + 2W, ...``; when ``n`` is not a multiple of ``W`` the
    shorter shards wrap around to the start, so every worker has ``ceil(n / W)`` samples and
    makes the same number of synchronous steps (a worker with fewer would block the others).

    Parameters
    ----------
    n : int
        Number of samples (> 0).
    rank : int
        0 <= rank < num_workers.
    num_workers : int
        >= 1.

    Returns
    -------
    np.ndarray of int64
        The shard, ``ceil(n / num_workers)`` indices in [0, n).
    """
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    if not 0 <= rank < num_workers:
        raise ValueError(f"rank must be in [0, {num_workers}), got {rank}")
    if n < 1:
        raise ValueError(f"cannot shard {n} samples")
    per_worker = -(-n // num_workers)
    return (rank + num_workers * np.arange(per_worker, dtype=np.int64)) % n


def num_workers(trainer):
    """Number of worker processes sharing the gradient sum (1 unless the kvstore is ``dist_*``)."""
    # build_trainer always hands a created KVStore object to the trainer for distributed types.
    store = trainer._kvstore_params["kvstore"]
    return store.num_workers if isinstance(store, mx.kvstore.KVStore) else 1


def worker_rank(trainer):
    """Rank of this process among the ``dist_*`` workers (0 for a local kvstore)."""
    store = trainer._kvstore_params["kvstore"]
    return store.rank if isinstance(store, mx.kvstore.KVStore) else 0


#: Distributed kvstores of this process, by type: ps-lite starts once per process, so every
#: trainer (e.g. one per round) must share the first one.
_DIST_KVSTORES = {}
#: (kvstore, parameter shapes) of the distributed kvstores whose keys (parameter indices) are
#: already initialised on the servers.
_INITIALISED_KVSTORES = []


@atexit.register
def _release_kvstores():
    # A distributed kvstore still alive at interpreter shutdown (held by a trainer in a global
    # or a traceback) blocks the exit: its destructor waits for the other nodes after MXNet's
    # engine has stopped. Free them here, before MXNet's own exit hook (registered earlier,
    # so it runs later); the emptied handle makes the later __del__ a no-op (delete NULL).
    stores = list(_DIST_KVSTORES.values())
    stores += [s for s, _ in _INITIALISED_KVSTORES if not any(s is t for t in stores)]
    _DIST_KVSTORES.clear()
    del _INITIALISED_KVSTORES[:]
    for store in stores:
        if store.handle:
            mx.base.check_call(mx.base._LIB.MXKVStoreFree(store.handle))
            store.handle = mx.base.KVStoreHandle()


def process_kvstore(kvstore):
    """The kvstore to hand to a trainer: ``dist_*`` types are created once per process.

    Parameters
    ----------
    kvstore : str or mx.kvstore.KVStore

    Returns
    -------
    str or mx.kvstore.KVStore
        ``kvstore`` itself unless it names a distributed type, then this process's instance.
    """
    if not (isinstance(kvstore, str) and kvstore.startswith("dist")):
        return kvstore
    if kvstore not in _DIST_KVSTORES:
        _DIST_KVSTORES[kvstore] = mx.kv.create(kvstore)
    return _DIST_KVSTORES[kvstore]


def start_distributed_trainer(trainer, store):
    """Connect ``trainer`` to the distributed ``store`` now; all workers get rank 0's weights.

    Every worker must call this (it waits for all of them). For a later trainer of the same
    process and store (the next round), nothing is broadcast: the servers already hold the
    keys and the workers' parameters are already equal; its parameters must have the same
    shapes as the first trainer's (ValueError otherwise).
    """
    # Gluon would do this lazily at the first step, after the first backward, so each
    # worker's first gradient would come from its own initial weights.
    trainer._init_kvstore()
    params = trainer._params
    shapes = [tuple(p.shape) for p in params]
    for known, known_shapes in _INITIALISED_KVSTORES:
        if known is store:
            # A later trainer of the same process (next round): the servers hold these keys and
            # the workers' parameters are already equal. Initialising a key twice would block.
            if shapes != known_shapes:
                raise ValueError("a distributed kvstore serves one network per process: this "
                                 "trainer's parameters differ from the first trainer's")
            trainer._params_to_init = []
            return
    keys = list(range(len(params)))  # Gluon's keys: the parameter's index in the trainer
    # Copies, not the parameter arrays: after an inference forward (pseudo-labels, evaluation)
    # oneDNN keeps conv weights in its own layout, and MXNet 1.9.1 then loses rank 0's init
    # push of those keys (the server aborts with "init <key> first"; seen on CPU, gone with
    # MXNET_MKLDNN_ENABLED=0 or with copies). tests/test_dist.py covers this case.
    store.init(keys, [p.list_data()[0].copy() for p in params])
    # All of rank 0's init pushes are acknowledged before any worker pulls.
    mx.nd.waitall()
    store._barrier()
    store.pull(keys, out=[p.list_data() for p in params])
    mx.nd.waitall()
    trainer._params_to_init = []
    _INITIALISED_KVSTORES.append((store, shapes))

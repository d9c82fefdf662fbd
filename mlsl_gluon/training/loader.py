"""Training batches read and augmented by background worker processes (a prefetching pool).

Reading a GTA5 frame and cropping/rescaling it costs about 70 ms of one core per image, more
than a GPU step of ResNet-38; with ``num_workers`` > 0 worker processes prepare the next
batches while the network trains on the current one.

The batches do not depend on the number of workers: which items form step ``it`` comes from the
epoch's seeded order, each item is augmented with its own generator of (seed, stage, epoch,
item) wherever it is read (:class:`~.datasets.EpochItems`), and MXNet's generator (dropout) is
reseeded in the training process right before each step is handed out. So 0, 1 or 8 workers
give bit-identical batches and weights, and a resumed epoch (``start_iteration``) still draws
exactly the batches an uninterrupted one would have drawn.
"""
import logging
import multiprocessing
import signal
from collections import deque

from .datasets import stack_items

logger = logging.getLogger(__name__)

#: Seconds the trainer waits for one batch before giving up (a cold network file system can
#: take long; a worker that died never answers).
BATCH_TIMEOUT = 600

#: The epoch's items in a worker process (inherited through fork, never pickled).
_worker_items = None


def _start_worker(items):
    global _worker_items
    _worker_items = items
    # No cv2.setNumThreads here: reconfiguring OpenCV's thread pool in a forked child whose
    # parent already ran it hangs the child (seen with the pseudo-label step before training).
    # Ctrl-C is the training process's to handle; workers are terminated by it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _load_batch(picked):
    return stack_items([_worker_items[i] for i in picked])


class BackgroundBatches:
    """The batches of an :class:`~.datasets.EpochBatches`, prepared by ``num_workers`` processes.

    Like Gluon's DataLoader with ``num_workers`` (forked workers, a bounded number of batches
    in flight, results in order), but the workers end with the epoch, also when training stops
    in the middle of it.

    Parameters
    ----------
    batches : EpochBatches
        What to produce (its dataset, order, shard and ``start_iteration``).
    num_workers : int
        Worker processes; 0 reads every batch in the training process, as ``batches`` itself.
    prefetch : int or None
        Batches in preparation ahead of the trainer (default ``2 * num_workers``).

    Yields
    ------
    tuple
        Exactly the tuples ``batches`` yields, in the same order.
    """

    def __init__(self, batches, num_workers, prefetch=None):
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.batches, self.num_workers = batches, int(num_workers)
        self.prefetch = max(1, 2 * self.num_workers if prefetch is None else int(prefetch))

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        if self.num_workers == 0:
            yield from self.batches
            return
        steps = iter(self.batches.steps())
        # fork: the workers inherit the dataset (readers, pseudo-label paths); only item
        # indices and finished arrays cross between processes. They never touch MXNet.
        pool = multiprocessing.get_context("fork").Pool(
            self.num_workers, initializer=_start_worker, initargs=(self.batches.items(),))
        try:
            pending = deque()
            for it, picked in steps:
                pending.append((it, pool.apply_async(_load_batch, (picked,))))
                if len(pending) >= self.prefetch:
                    yield self._next(pending)
            while pending:
                yield self._next(pending)
        finally:
            pool.terminate()
            pool.join()

    def _next(self, pending):
        it, result = pending.popleft()
        try:
            batch = result.get(BATCH_TIMEOUT)
        except multiprocessing.TimeoutError:
            raise TimeoutError(f"no training batch {it} from the {self.num_workers} loader workers "
                               f"after {BATCH_TIMEOUT} s (a worker killed, e.g. out of memory?)") from None
        self.batches.seed_step(it)
        return batch

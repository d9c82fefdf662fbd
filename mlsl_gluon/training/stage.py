"""A resumable training stage: E epochs of SGD with checkpoints, shared by source-only training
and step 2 of every MLSL round.

The checkpoint ``state`` says where the run is: ``{"stage": s, "round": r, "phase": "train",
"epoch": e, "iteration": i}`` means "epochs before e and the first i batches of epoch e are done".
"""
import logging

import mxnet as mx

from ..data import TrainTransform
from .checkpoint import save_checkpoint
from .datasets import EpochBatches, num_batches
from .engine import NonFiniteLossError, train_epoch
from .loader import BackgroundBatches

logger = logging.getLogger(__name__)


class TrainingStopped(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the last good checkpoint is kept."""


def no_event(event, **info):
    """Default event hook: does nothing (tests inject faults through this hook)."""


def worker_shard(kvstore):
    """``(rank, num_workers)`` of this process: ``(0, 1)`` unless the kvstore is distributed.

    ``kvstore`` is what :func:`mlsl_gluon.training.distributed.process_kvstore` returned.
    """
    if isinstance(kvstore, mx.kvstore.KVStore) and "dist" in kvstore.type:
        return kvstore.rank, kvstore.num_workers
    return 0, 1


def train_transform(config, hard_classes=None):
    """The training augmentation of SPEC section 2 (item rng supplied per call).

    ``hard_classes``: the round's :class:`~mlsl_gluon.training.hard_classes.HardClasses`
    (released profile: its ``rarest`` and ``priority`` sets); else ``data.hard_classes_released``
    (no priority classes).
    """
    if hard_classes is None:
        hard, priority = config.data.hard_classes_released, None
    else:
        hard, priority = hard_classes.rarest, hard_classes.priority
    return TrainTransform(crop_size=config.data.crop_size, scale_range=tuple(config.data.scale_range),
                          flip=config.data.flip, hard_class=hard or None, hard_class_priority=priority,
                          hard_class_prob=config.data.hard_class_prob)


def train_stage(run, net, trainer, dataset, ctx_list, *, state, settings, on_event=no_event, progress=True,
                shard=(0, 1)):
    """Train ``settings.epochs`` epochs from the position in ``state``, checkpointing into the run folder.

    Parameters
    ----------
    run : RunFolder
        Receives ``checkpoints/latest.params`` and metrics lines.
    net, trainer, ctx_list
        As for :func:`mlsl_gluon.training.engine.train_epoch`.
    dataset : SelfTrainingSet
    state : dict
        Checkpoint state with ``stage``, ``epoch`` and ``iteration`` (and anything else to keep).
    settings : TrainSettings
        ``epochs``, ``batch_size``, ``seed``, ``loss`` (for ``train_epoch``), ``lr`` (logged; the
        trainer already uses it), ``checkpoint_every`` (mid-epoch checkpoint every this many
        iterations, 0 = only at epoch ends) and ``log_every`` (metrics and log line every this
        many iterations).
    on_event : callable
        ``on_event(name, **info)`` after every iteration (``'iteration'``) and epoch (``'epoch_end'``).
    shard : (int, int)
        ``(rank, num_workers)`` with a distributed kvstore (see :class:`EpochBatches`).

    Returns
    -------
    dict
        ``state`` advanced to ``epoch = epochs, iteration = 0``.

    Raises
    ------
    TrainingStopped
        On a NaN / infinite loss, naming round, epoch and iteration; latest.params stays the
        last good state.
    """
    epochs, batch_size, lr = settings.epochs, settings.batch_size, settings.lr
    log_every, checkpoint_every = settings.log_every, settings.checkpoint_every
    state = dict(state)
    total = num_batches(len(dataset), batch_size * shard[1])
    # Records a killed run wrote after the checkpoint it resumes from are written again below.
    run.drop_records_from(state["stage"], state["epoch"], state["iteration"])
    while state["epoch"] < epochs:
        epoch, start = state["epoch"], state["iteration"]
        batches = EpochBatches(dataset, batch_size, seed=settings.seed, stage=state["stage"], epoch=epoch,
                               start_iteration=start, shard=shard)
        batches = BackgroundBatches(batches, settings.loader_workers)
        where = {"stage": state["stage"], "round": state.get("round"), "epoch": epoch}
        # Loss sums of the epoch's batches before a mid-epoch resume, so the epoch's record
        # covers the whole epoch (those batches were all full: checkpoints fall mid-epoch).
        partial = state.pop("partial", None) if start else None
        sums = dict(partial["sums"]) if partial else {}
        images = partial["images"] if partial else 0

        def on_iteration(iteration, losses, where=where, epoch=epoch, sums=sums, images=images, start=start):
            done = iteration + 1
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + value * batch_size
            if log_every and done % log_every == 0:
                run.log("train", **where, iteration=iteration, lr=lr, **losses)
            if checkpoint_every and done % checkpoint_every == 0 and done < total:
                seen = images + (done - start) * batch_size
                position = dict(state, epoch=epoch, iteration=done, partial={"sums": sums, "images": seen})
                save_checkpoint(run.latest_checkpoint, net, trainer, position)
            on_event("iteration", **where, iteration=iteration, losses=losses)

        try:
            result = train_epoch(net, trainer, batches, ctx_list, start_iteration=start, log_every=log_every,
                                 progress=progress, on_iteration=on_iteration, loss=settings.loss)
        except NonFiniteLossError as err:
            run.log("stopped", **where, iteration=err.iteration, loss=err.loss_name, value=str(err.value))
            raise TrainingStopped(
                f"training stopped in {_describe(where)}, iteration {err.iteration} of the epoch: {err}. "
                f"The last good checkpoint {run.latest_checkpoint} is kept; lower the learning rate "
                f"(--set train.lr=...) and run the same command with --resume") from err
        if partial:
            result = _whole_epoch(result, partial, start)
        state.update(epoch=epoch + 1, iteration=0)
        # Logged before the checkpoint: a kill in between resumes before this record, which the
        # resumed run then drops and writes again (never lost, never doubled).
        run.log("epoch", **where, lr=lr, **result)
        save_checkpoint(run.latest_checkpoint, net, trainer, state)
        logger.info("%s done: %s", _describe(where),
                    ", ".join(f"{k} {v:.4g}" for k, v in result.items() if isinstance(v, float)))
        on_event("epoch_end", **where)
    return state


def _whole_epoch(result, partial, start):
    """The epoch record of a resumed epoch: means over the batches before and after the resume."""
    before, after = partial["images"], result["images"]
    whole = dict(result)
    for name, total in partial["sums"].items():
        whole[name] = (total + result[name] * after) / max(before + after, 1)
    whole.update(iterations=start + result["iterations"], images=before + after, resumed_at=start)
    return whole


def _describe(where):
    stage = "source-only training" if where["round"] is None else f"round {where['round']}"
    return f"{stage}, epoch {where['epoch']}"

"""Source-only training (SPEC section 5): the starting point of every adaptation method.

CBST's source models were trained from ImageNet weights with SGD at a fixed lr 0.0016, batch
16, 30 epochs (GTA5) or 50 (SYNTHIA). Given such a source model instead (the CBST release's
``*_rna-a1_cls*_s8_ep-0000.params``), training is skipped and the model is only evaluated:
that is the paper's "source only" row.
"""
import logging

from .checkpoint import load_checkpoint
from .datasets import SelfTrainingSet
from .engine import build_trainer
from .rounds import build_network, finish, train_transform
from .stage import no_event, train_stage, worker_shard

logger = logging.getLogger(__name__)


def source_only_state():
    """Where a fresh source-only run starts (stage 0 keeps its random streams apart from the rounds)."""
    return {"stage": 0, "round": None, "phase": "train", "epoch": 0, "iteration": 0}


def run_source_only(run, config, data, weights, ctx_list, *, kvstore="device", on_event=no_event,
                    progress=True):
    """Train the source model from ImageNet weights, or evaluate a given source model.

    Parameters
    ----------
    run : RunFolder
    config : Config
    data : RunData
    weights : str or Path
        ImageNet ademxapp file (trains) or a source model (evaluated only).
    ctx_list : list of mx.Context
    kvstore : str
    on_event : callable
        ``on_event(name, **info)`` hook, as in :func:`mlsl_gluon.training.rounds.run_rounds`.

    Returns
    -------
    dict
        Run summary (see :func:`mlsl_gluon.training.rounds.finish`).
    """
    net, kind = build_network(config, ctx_list, weights)
    if kind in ("source", "gluon"):
        logger.info("%s already holds a segmentation model: source-only training skipped, "
                    "evaluating it", weights)
        return finish(run, config, net, data, ctx_list, progress)
    so = config.source_only
    trainer = build_trainer(net, ctx_list, lr=so.lr, momentum=so.momentum, wd=so.wd, kvstore=kvstore)
    state = source_only_state()
    if run.latest_checkpoint.is_file():
        state = load_checkpoint(run.latest_checkpoint, net, trainer)
        trainer.set_learning_rate(so.lr)  # the loaded states hold the lr of the previous start
        logger.info("resuming source-only training at epoch %d, iteration %d",
                    state["epoch"], state["iteration"])
    dataset = SelfTrainingSet(data.source, range(len(data.source)), train_transform(config),
                              config.num_classes)
    train_stage(run, net, trainer, dataset, ctx_list, state=state, epochs=so.epochs, batch_size=so.batch_size,
                seed=config.experiment.seed, lr=so.lr, loss_options={"use_cls": False},
                checkpoint_every=config.train.checkpoint_every, log_every=config.train.log_every,
                on_event=on_event, progress=progress, shard=worker_shard(kvstore))
    return finish(run, config, net, data, ctx_list, progress)

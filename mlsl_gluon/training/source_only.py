"""Source-only training (SPEC section 5): the starting point of every adaptation method.

CBST's source models were trained from ImageNet weights with SGD at a fixed lr 0.0016, batch
16, 30 epochs (GTA5) or 50 (SYNTHIA). Given such a source model instead (the CBST release's
``*_rna-a1_cls*_s8_ep-0000.params``), training is skipped and the model is only evaluated:
that is the paper's "source only" row.
"""
import logging

from ..config import train_settings
from .checkpoint import load_checkpoint
from .datasets import SelfTrainingSet
from .engine import build_trainer
from .network import build_network, finish
from .stage import no_event, train_stage, train_transform, worker_shard

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
        Run summary (see :func:`mlsl_gluon.training.network.finish`).
    """
    net, kind = build_network(config, ctx_list, weights)
    if kind in ("source", "gluon"):
        logger.info("%s already holds a segmentation model: source-only training skipped, "
                    "evaluating it", weights)
        return finish(run, config, net, data, ctx_list, progress)
    settings = train_settings(config)
    trainer = build_trainer(net, ctx_list, lr=settings.lr, momentum=settings.momentum, wd=settings.wd,
                            kvstore=kvstore)
    state = source_only_state()
    if run.latest_checkpoint.is_file():
        state = load_checkpoint(run.latest_checkpoint, net, trainer)
        trainer.set_learning_rate(settings.lr)  # the loaded states hold the lr of the previous start
        logger.info("resuming source-only training at epoch %d, iteration %d",
                    state["epoch"], state["iteration"])
    dataset = SelfTrainingSet(data.source, range(len(data.source)), train_transform(config),
                              config.num_classes)
    train_stage(run, net, trainer, dataset, ctx_list, state=state, settings=settings, on_event=on_event,
                progress=progress, shard=worker_shard(kvstore))
    return finish(run, config, net, data, ctx_list, progress)

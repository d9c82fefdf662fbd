"""The MLSL self-training loop (paper Sec. 3, 4.1.3): for r = 0..R-1,
(1) pseudo-labels for the target set with the current weights, (2) E epochs on a seeded source
subset plus every pseudo-labelled target image, (3) evaluation on the target val set.

One loop serves every method: CBST (SI pseudo-labels), SISC (Sec. 3.2), each with or without
pseudo weak labels (Sec. 3.3), and source-only (no rounds). The run resumes from
``checkpoints/latest.params``, whose state is ``{"round": r, "phase": "pseudo" | "train", ...}``.
"""
import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np

from ..config import pseudo_label_settings, source_portion, train_settings
from ..profiles import field_value
from ..pseudo_labels import combine_pseudo_label_round, released_per_crop_weak_labels, run_pseudo_label_round
from ..pseudo_labels.round import RoundFolder, file_digest
from .checkpoint import load_checkpoint, save_checkpoint
from .datasets import SelfTrainingSet, source_subset
from .engine import build_trainer, round_learning_rate
from .hard_classes import select_hard_classes
from .inputs import SOURCE_WEIGHTS, InputError, source_statistics
from .network import build_network, evaluate_round, finish
from .repair import rebuild_pseudo_labels, set_aside_damaged_cache
from .stage import no_event, train_stage, train_transform
from .worker_group import WorkerGroup

logger = logging.getLogger(__name__)


def pseudo_label_step(run, config, net, data, ctx_list, round_idx, stats, weights_file, group=None,
                      progress=True):
    """Step 1 of round r: SI (CBST) or SISC pseudo-labels + PWL of the whole target set.

    With several workers (``group``) each labels its shard of the target set into rank 0's
    round folder, rank 0 combines the shards' thresholds and writes the labels, and every
    worker returns the same statistics.
    """
    group = group or WorkerGroup(0, 1, run.path)
    settings = pseudo_label_settings(config)
    portion = settings.portion(round_idx)
    out_dir = group.shared_path(run.pseudo_dir(round_idx), run.path)
    out_dir.mkdir(parents=True, exist_ok=True)
    folder = RoundFolder(str(out_dir), round_idx, shard=group.shard)
    set_aside_damaged_cache(folder.cache_path)
    started, cpu_started = time.perf_counter(), time.process_time()
    if group.num_workers > 1:
        group.barrier()  # rank 0 has written the weights of the previous round
        weights_file = group.rank0_file(weights_file, run.path)

    def label_shard():
        return run_pseudo_label_round(
            net, data.target_train, folder, portion=portion, ctx=ctx_list, settings=settings,
            source_stats=stats, checkpoint_digest=file_digest(weights_file), progress=progress)

    def combine_shards():
        sizes = stats["class_mean_sizes"] if settings.weak_labels else None
        combine_pseudo_label_round(folder, portion=portion, num_shards=group.num_workers,
                                   class_mean_sizes=sizes, eta=settings.eta, progress=progress)

    if group.num_workers == 1:
        result = label_shard()
    else:
        result = group.map_reduce(label_shard, combine_shards, out_dir / "stats.json")
    run.log("pseudo_labels", round=round_idx, portion=portion, workers=group.num_workers,
            seconds=round(time.perf_counter() - started, 3),
            cpu_seconds=round(time.process_time() - cpu_started, 3), stats=_jsonable(result))
    return result


def restore_pseudo_labels(run, config, data, round_idx, stats, progress=True, group=None):
    """Rebuild pseudo-label files of a finished step 1 that were deleted, from the round's cache
    (of every shard; with several workers rank 0 rebuilds them while the others wait)."""
    group = group or WorkerGroup(0, 1, run.path)
    settings = pseudo_label_settings(config)
    if group.rank == 0:
        rebuilt = rebuild_pseudo_labels(
            RoundFolder(str(group.shared_path(run.pseudo_dir(round_idx), run.path)), round_idx),
            data.target_train.names, portion=settings.portion(round_idx),
            class_mean_sizes=stats["class_mean_sizes"] if settings.weak_labels else None, eta=settings.eta,
            num_shards=group.num_workers, progress=progress)
        if rebuilt:
            run.log("pseudo_labels_rebuilt", round=round_idx, files=[str(p) for p in rebuilt])
    group.barrier()


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def round_hard_classes(run, config, round_idx, pseudo_dir=None):
    """Round r's hard classes (a ``HardClasses``) for the training crops (released profile), logged;
    None when off.

    A hand-given ``data.hard_classes_released`` list is used as is in every round; otherwise,
    with ``data.hard_class_mining_released``, they come from this round's pseudo-label class
    sizes (``stats.json``, also there when training resumes mid-round).
    """
    d = config.data
    if d.hard_classes_released is not None or not field_value(config, "data.hard_class_mining_released"):
        return None
    stats_path = Path(pseudo_dir or run.pseudo_dir(round_idx)) / "stats.json"
    sizes = json.loads(stats_path.read_text())["argmax_pixels_per_class"]
    hard = select_hard_classes(sizes, share=d.hard_class_share, number=d.hard_class_number)
    run.log("hard_classes", round=round_idx, ids=list(hard.ids), priority=list(hard.priority),
            rarest=list(hard.rarest), prob=d.hard_class_prob)
    logger.info("round %d: hard-class crops (p %.2f) on classes %s", round_idx, d.hard_class_prob,
                list(hard.ids))
    return hard


def round_dataset(run, config, data, round_idx, pseudo_dir=None):
    """Step 2's training set of round r: seeded source subset + pseudo-labelled target images
    (read from ``pseudo_dir``, default the run's own round folder)."""
    pseudo_dir = pseudo_dir or run.pseudo_dir(round_idx)
    r = config.rounds
    portion = source_portion(round_idx, r.source_portion_start, r.source_portion_step, r.source_portion_max)
    indices = source_subset(len(data.source), portion, config.experiment.seed)
    per_crop = (released_per_crop_weak_labels
                if field_value(config, "pseudo_label.per_crop_weak_labels_released") else None)
    transform = train_transform(config, hard_classes=round_hard_classes(run, config, round_idx, pseudo_dir))
    dataset = SelfTrainingSet(data.source, indices, transform, config.num_classes,
                              target=data.target_train, pseudo_dir=pseudo_dir,
                              with_weak_labels=config.use_pwl, per_crop_weak_labels=per_crop)
    logger.info("round %d: %d source + %d target images", round_idx, len(indices), len(data.target_train))
    return dataset


def initial_state():
    """Where a fresh self-training run starts."""
    return {"stage": 1, "round": 0, "phase": "pseudo", "epoch": 0, "iteration": 0}


def run_rounds(run, config, data, weights, ctx_list, *, kvstore="device", on_event=no_event, progress=True):
    """Rounds of MLSL from the run's latest consistent state to the end.

    Parameters
    ----------
    run : RunFolder
    config : Config
        Method other than source-only.
    data : RunData
    weights : str or Path
        Source model (CBST ``*_rna-a1_cls*_s8_ep-0000.params`` or a source-only run's output).
    ctx_list : list of mx.Context
    kvstore : str or mx.kvstore.KVStore
        For the trainers; a distributed one also shards every epoch over the workers.
    on_event : callable
        ``on_event(name, **info)`` hook: ``'pseudo_done'``, ``'iteration'``, ``'epoch_end'``, ``'round_end'``.

    Returns
    -------
    dict
        Final summary: method, source, per-round mIoU, final evaluation (if val labels).
    """
    net, kind = build_network(config, ctx_list, weights)
    if kind not in ("source", "gluon"):
        raise InputError(f"--weights {weights} holds no segmentation head (an ImageNet model?): the "
                         f"{config.experiment.method} rounds start from a source model such as "
                         f"{SOURCE_WEIGHTS[config.experiment.source]}; train one with --method source-only")
    # Eq. 4 sizes (PWL) and the spatial prior need one pass over the source labels.
    needed = config.use_pwl or config.pseudo_label.spatial_prior
    stats = source_statistics(run, config, data.source, progress) if needed else None
    state, pseudo_weights = initial_state(), Path(weights)
    if run.latest_checkpoint.is_file():
        state = load_checkpoint(run.latest_checkpoint, net)
        pseudo_weights = run.round_checkpoint(state["round"] - 1) if state["round"] > 0 else pseudo_weights
        logger.info("resuming at round %d, %s phase, epoch %d, iteration %d", state["round"], state["phase"],
                    state["epoch"], state["iteration"])
    # Every dist_sync worker must make the same calls (barriers), so all continue from one state.
    group = WorkerGroup.of_run(kvstore, run.path)
    state = group.join(state)
    total_rounds = config.rounds.num_rounds
    settings = train_settings(config)
    while state["round"] < total_rounds:
        r = state["round"]
        stage = dataclasses.replace(settings, lr=round_learning_rate(settings.lr, r))
        if state["phase"] == "pseudo":
            pseudo_label_step(run, config, net, data, ctx_list, r, stats, pseudo_weights, group, progress)
            state = dict(state, stage=r + 1, phase="train", epoch=0, iteration=0)
            # Step 1 is finished: a resume from here goes straight to training.
            save_checkpoint(run.latest_checkpoint, net, None, state)
            on_event("pseudo_done", round=r)
        # Every round is its own training session at a fixed lr (CBST's released code restarted
        # from the saved model each round), so momentum starts from zero in each round.
        trainer = build_trainer(net, ctx_list, lr=stage.lr, momentum=stage.momentum, wd=stage.wd,
                                kvstore=kvstore)
        if state["epoch"] or state["iteration"]:
            load_checkpoint(run.latest_checkpoint, net, trainer)
            trainer.set_learning_rate(stage.lr)  # the loaded states hold the lr of the previous start
        pseudo_dir = group.shared_path(run.pseudo_dir(r), run.path)
        restore_pseudo_labels(run, config, data, r, stats, progress, group)
        dataset = round_dataset(run, config, data, r, pseudo_dir)
        state = train_stage(run, net, trainer, dataset, ctx_list, state=state, settings=stage,
                            on_event=on_event, progress=progress, shard=group.shard)
        # The last round's weights are the final ones: their evaluation is also the run's result.
        out_dirs = [run.path / f"round_{r:02d}" / "eval"] + ([run.path] if r == total_rounds - 1 else [])
        evaluate_round(run, config, net, data, ctx_list, out_dirs,
                       {"round": r, "method": config.experiment.method, "lr": stage.lr}, progress)
        next_state = {"stage": r + 2, "round": r + 1, "phase": "pseudo", "epoch": 0, "iteration": 0}
        save_checkpoint(run.round_checkpoint(r), net, trainer, next_state)
        save_checkpoint(run.latest_checkpoint, net, trainer, next_state)
        state, pseudo_weights = next_state, run.round_checkpoint(r)
        on_event("round_end", round=r)
    return finish(run, config, net, data, ctx_list, progress)


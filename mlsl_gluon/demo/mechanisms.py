"""Measure the paper's two mechanisms in a finished demo, from its run folders and the target truth.

Reads what the rounds wrote (pseudo-labels, weak labels, checkpoints, metrics) and the target-train
ground truth in the demo's ``truth/`` folder, which lies outside the data root the runs read.
Besides each method's own pseudo-labels it re-labels the target with SI on the very networks the
SISC run labelled with (``si_same_network``): the same weights, portion and prior, so that
SISC-vs-SI differs only in the inference, the comparison of the paper's Sec. 3.2.
"""
import logging
from pathlib import Path

import mxnet as mx
import numpy as np

from ..data.transforms import normalize
from ..pseudo_labels import load_source_stats
from ..training.checkpoint import load_checkpoint
from ..training.inputs import open_datasets
from ..training.network import build_network
from ..training.rounds import pseudo_label_step
from .measures import (
    binary_cross_entropy,
    classification_losses,
    presence_accuracy,
    present_classes,
    read_weak_labels,
    round_pseudo_label_quality,
)
from .synthetic import read_target_truth

logger = logging.getLogger(__name__)

PSEUDO_LABEL_RUNS = ("cbst", "sisc", "sisc_pwl")
SAME_NETWORK = "si_same_network"


class _MeasurementRun:
    """The two things ``pseudo_label_step`` needs of a run folder, for a re-labelling pass."""

    def __init__(self, path):
        self.path = Path(path)

    def pseudo_dir(self, round_idx):
        return self.path / f"round_{round_idx:02d}" / "pseudo"

    def log(self, event, **values):
        """Nothing to record: the measurement is not a run."""


def _round_weights(out, key, round_idx):
    """Weights that labelled round r of a run: the source model, then the previous round's."""
    if round_idx == 0:
        return out / "source_only" / "final.params"
    return out / key / "checkpoints" / f"round_{round_idx - 1:02d}.params"


def _network(config, ctx, out, weights):
    net, _ = build_network(config, ctx, out / "source_only" / "final.params")
    if weights.name != "final.params":
        load_checkpoint(weights, net)
    return net


def si_on_sisc_networks(out, config_of, num_rounds, ctx, progress=False):
    """SI pseudo-labels of every round made with the networks the SISC run labelled with.

    Parameters
    ----------
    out : Path
        Demo folder.
    config_of : callable
        ``config_of(method) -> Config`` of the demo run of that method.
    num_rounds : int
    ctx : list of mx.Context
    progress : bool

    Returns
    -------
    Path
        ``out/si_same_network``, holding ``round_RR/pseudo/labels``.
    """
    config = config_of("cbst")
    run = _MeasurementRun(out / SAME_NETWORK)
    data = open_datasets(config, out / "data", need_val=False)
    stats = load_source_stats(str(out / "sisc" / "source_stats.npz"))
    for r in range(num_rounds):
        if (run.pseudo_dir(r) / "stats.json").is_file():
            continue
        weights = _round_weights(out, "sisc", r)
        net = _network(config, ctx, out, weights)
        pseudo_label_step(run, config, net, data, ctx, r, stats, weights, progress=progress)
    return run.path


def branch_predictions(net, dataset, ctx, batch_size=8):
    """Sigmoid outputs (N, C) of the classification branch on every whole target-train image."""
    outputs = []
    for start in range(0, len(dataset), batch_size):
        images = [normalize(dataset[i][0]) for i in range(start, min(start + batch_size, len(dataset)))]
        _, cls_logits = net(mx.nd.array(np.stack(images), ctx=ctx[0]))
        outputs.append(mx.nd.sigmoid(cls_logits).asnumpy())
    return np.concatenate(outputs)


def measure_mechanisms(out, config_of, num_rounds, ctx, progress=False):
    """Per-round pseudo-label quality of every method and the PWL branch's accuracies.

    Parameters
    ----------
    out : str or Path
        Finished demo folder (``data/``, ``truth/``, the run folders).
    config_of : callable
        ``config_of(method) -> Config``.
    num_rounds : int
    ctx : list of mx.Context
    progress : bool

    Returns
    -------
    dict
        ``pseudo_label_precision`` / ``pseudo_label_coverage``: {run: [per round]} for cbst,
        sisc, sisc_pwl and si_same_network; ``pseudo_label_per_class``: {run: [per round:
        {precision: [C], coverage: [C]}]}; ``weak_label_accuracy`` and ``branch_accuracy``:
        {sisc_pwl: [per round]}; their ``*_per_class``; ``classification_loss`` (training, last
        epoch of each round) and ``target_classification_loss`` (the branch on the target images
        against their PWL); ``weak_label_positive_share`` (share of ones in the PWL vectors);
        ``presence_majority_accuracy``: accuracy of the best constant per-class answer.
    """
    out = Path(out)
    pwl_config = config_of("sisc-pwl")
    target = open_datasets(pwl_config, out / "data", need_val=False).target_train
    names = list(target.names)
    truths = {name: read_target_truth(out / "truth", name, pwl_config.num_classes) for name in names}
    presence = np.array([present_classes(truths[n], pwl_config.num_classes) for n in names])
    si_on_sisc_networks(out, config_of, num_rounds, ctx, progress)

    results = {"pseudo_label_precision": {}, "pseudo_label_coverage": {}, "pseudo_label_per_class": {}}
    for key in PSEUDO_LABEL_RUNS + (SAME_NETWORK,):
        per_round = [round_pseudo_label_quality(out / key / f"round_{r:02d}" / "pseudo", names, truths,
                                                pwl_config.num_classes) for r in range(num_rounds)]
        results["pseudo_label_precision"][key] = [q["precision"] for q in per_round]
        results["pseudo_label_coverage"][key] = [q["coverage"] for q in per_round]
        results["pseudo_label_per_class"][key] = [{"precision": q["per_class_precision"],
                                                   "coverage": q["per_class_coverage"]} for q in per_round]

    weak, branch, target_loss, positives = [], [], [], []
    for r in range(num_rounds):
        pwl = read_weak_labels(out / "sisc_pwl" / f"round_{r:02d}" / "pseudo", names)
        weak.append(presence_accuracy(pwl, presence))
        positives.append(float(pwl.mean()))
        # The branch after round r's training, on whole images (it trained on crops of them).
        net = _network(pwl_config, ctx, out, out / "sisc_pwl" / "checkpoints" / f"round_{r:02d}.params")
        scores = branch_predictions(net, target, ctx)
        branch.append(presence_accuracy(scores > 0.5, presence))
        target_loss.append(binary_cross_entropy(scores, pwl))
    results.update(
        weak_label_accuracy={"sisc_pwl": [w["accuracy"] for w in weak]},
        weak_label_accuracy_per_class={"sisc_pwl": [w["per_class"] for w in weak]},
        weak_label_positive_share={"sisc_pwl": positives},
        true_presence_share=float(presence.mean()),
        # The best constant answer per class (its majority over the images), read off the truth:
        # the level a branch that learnt only the class frequencies would reach.
        presence_majority_accuracy=float(np.maximum(presence.mean(0), 1 - presence.mean(0)).mean()),
        branch_accuracy={"sisc_pwl": [b["accuracy"] for b in branch]},
        branch_accuracy_per_class={"sisc_pwl": [b["per_class"] for b in branch]},
        classification_loss={"sisc_pwl": classification_losses(out / "sisc_pwl", num_rounds)},
        target_classification_loss={"sisc_pwl": target_loss})
    logger.info("pseudo-label precision per round: %s", {k: [round(v, 3) for v in vals] for k, vals in
                                                        results["pseudo_label_precision"].items()})
    return results

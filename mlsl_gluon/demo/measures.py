"""The demo's measurements of each mechanism where it acts, against the target-train ground truth.

Self-training (Sec. 3.1) rests on pseudo-labels being right more often than not: per round and
method, the *precision* of the selected pseudo-labels (share of selected pixels whose label is
the true class) and their *coverage* (share of pixels selected). SISC (Sec. 3.2) claims more
precise labels than single inference (SI, CBST) at the same portion p. PWL (Sec. 3.3) acts
through the image-level labels given to the classification branch: their *weak-label accuracy*
(agreement with the true image-level presence) and the branch's own *prediction accuracy*
(sigmoid > 0.5 against the true presence).

Pixels whose truth is void (the ego car's bonnet, 255) count neither as right nor wrong: every
share below is over the pixels with a true class. Accuracies are over every (image, class) pair.
The ground truth comes from the folder the generator writes outside the data root
(:func:`mlsl_gluon.demo.synthetic.read_target_truth`); nothing here runs during the adaptation.
"""
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

IGNORE_LABEL = 255


def _share(numerator, denominator):
    """numerator / denominator elementwise, NaN where the denominator is 0."""
    numerator, denominator = np.asarray(numerator, np.float64), np.asarray(denominator, np.float64)
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


class PseudoLabelQuality:
    """Precision and coverage of pseudo-labels, summed over images.

    Parameters
    ----------
    num_classes : int
        C; pseudo-labels and truths hold class ids < C or 255.
    """

    def __init__(self, num_classes):
        self.num_classes = num_classes
        # joint[t, s]: pixels of true class t labelled s, s = C meaning "not selected".
        self.joint = np.zeros((num_classes, num_classes + 1), np.int64)

    def update(self, pseudo_label, truth):
        """Add one image: (H, W) pseudo-label (255 = not selected) and (H, W) true train ids."""
        pseudo_label, truth = np.asarray(pseudo_label), np.asarray(truth)
        if pseudo_label.shape != truth.shape:
            raise ValueError(f"pseudo-label {pseudo_label.shape} and truth {truth.shape} sizes differ")
        valid = truth != IGNORE_LABEL
        t = truth[valid].astype(np.int64)
        s = pseudo_label[valid].astype(np.int64)
        s = np.where(s == IGNORE_LABEL, self.num_classes, s)
        if t.size and (t.max() >= self.num_classes or s.max() > self.num_classes):
            raise ValueError(f"class ids must be < {self.num_classes} or 255")
        self.joint += np.bincount(t * (self.num_classes + 1) + s,
                                  minlength=self.joint.size).reshape(self.joint.shape)
        return self

    def summary(self):
        """Overall and per-class shares.

        Returns
        -------
        dict
            ``precision`` (right / selected), ``coverage`` (selected / pixels), and per class
            ``per_class_precision`` (pixels labelled c that are c / pixels labelled c) and
            ``per_class_coverage`` (pixels of true class c that got a label / pixels of c);
            None where nothing was counted.
        """
        selected = self.joint[:, :-1]
        right = np.trace(selected)
        total = self.joint.sum()
        per_precision = _share(np.diag(selected), selected.sum(0))
        per_coverage = _share(selected.sum(1), self.joint.sum(1))
        return {"precision": _value(_share(right, selected.sum())),
                "coverage": _value(_share(selected.sum(), total)),
                "per_class_precision": [_value(v) for v in per_precision],
                "per_class_coverage": [_value(v) for v in per_coverage]}


def _value(x):
    x = float(x)
    return None if math.isnan(x) else x


def present_classes(train_ids, num_classes):
    """(C,) 0/1: class c occurs in the (H, W) true train ids (the image-level truth)."""
    ids = np.asarray(train_ids)
    ids = ids[ids < num_classes].astype(np.int64)
    return (np.bincount(ids, minlength=num_classes)[:num_classes] > 0).astype(np.uint8)


def presence_accuracy(predicted, truth):
    """Agreement of image-level labels with the true presence.

    Parameters
    ----------
    predicted, truth : array-like
        (N, C) 0/1.

    Returns
    -------
    dict
        ``accuracy`` over all (image, class) pairs and ``per_class`` (C,) over the images.
    """
    predicted, truth = np.asarray(predicted, np.uint8), np.asarray(truth, np.uint8)
    if predicted.shape != truth.shape:
        raise ValueError(f"labels {predicted.shape} and truth {truth.shape} shapes differ")
    agree = predicted == truth
    return {"accuracy": float(agree.mean()), "per_class": [float(v) for v in agree.mean(0)]}


def binary_cross_entropy(probabilities, labels):
    """Mean BCE (Eq. 5 averaged over images) of sigmoid outputs (N, C) against 0/1 labels (N, C)."""
    p = np.clip(np.asarray(probabilities, np.float64), 1e-7, 1 - 1e-7)
    y = np.asarray(labels, np.float64)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def round_pseudo_label_quality(pseudo_dir, names, truths, num_classes):
    """:meth:`PseudoLabelQuality.summary` of one round folder's ``labels/<name>.png``.

    Parameters
    ----------
    pseudo_dir : str or Path
        ``<run>/round_RR/pseudo``.
    names : list of str
        Target-train item names.
    truths : dict
        ``{name: (H, W) true train ids}``.
    num_classes : int
    """
    quality = PseudoLabelQuality(num_classes)
    for name in names:
        path = Path(pseudo_dir) / "labels" / f"{name}.png"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: pseudo-label of {name!r} missing")
        quality.update(np.array(Image.open(path)), truths[name])
    return quality.summary()


def read_weak_labels(pseudo_dir, names):
    """(N, C) PWL vectors of ``names`` from a round folder's ``weak_labels.json``."""
    path = Path(pseudo_dir) / "weak_labels.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: the round wrote no pseudo weak labels")
    weak = json.loads(path.read_text())
    missing = [n for n in names if n not in weak]
    if missing:
        raise ValueError(f"{path}: no weak labels for {len(missing)} images, e.g. {missing[0]!r}")
    return np.array([weak[n] for n in names], np.uint8)


def classification_losses(run_dir, num_rounds):
    """Mean Eq. 5 loss of the last epoch of each round, from a PWL run's ``metrics.jsonl``.

    Returns
    -------
    list of float
        One value per round (source and target images of the epoch together).
    """
    path = Path(run_dir) / "metrics.jsonl"
    last = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if record.get("event") == "epoch" and "cls" in record and isinstance(record.get("round"), int):
            last[record["round"]] = record["cls"]
    missing = [r for r in range(num_rounds) if r not in last]
    if missing:
        raise ValueError(f"{path}: no epoch record with a classification loss for rounds {missing}")
    return [float(last[r]) for r in range(num_rounds)]

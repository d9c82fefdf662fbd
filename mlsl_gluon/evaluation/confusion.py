"""The confusion matrix behind every IoU figure in the paper (Sec. 4.2, Tables 1 and 2).

Rows are ground-truth classes, columns predicted classes, summed over all evaluated pixels of
all images (not averaged per image), as the official Cityscapes evaluator does.
"""
import json
import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

_FORMAT = "mlsl-gluon-confusion-matrix"


def intersection_over_union(confusion):
    """Per-class IoU = TP / (TP + FP + FN) from a confusion matrix.

    Parameters
    ----------
    confusion : ndarray, shape (C, C + 1)
        ``confusion[g, p]`` = number of pixels of ground-truth class g predicted as p; the last
        column counts predictions outside [0, C) (always wrong).

    Returns
    -------
    ndarray, shape (C,), float64
        IoU of each class in [0, 1]; NaN for a class that is absent from both the ground truth
        and the predictions (TP + FP + FN = 0), so that it drops out of a nan-mean.
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    num_classes = confusion.shape[0]
    tp = np.diag(confusion[:, :num_classes])
    fn = confusion.sum(axis=1) - tp
    fp = confusion[:, :num_classes].sum(axis=0) - tp
    denom = tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, tp / np.where(denom > 0, denom, 1.0), np.nan)


class ConfusionMatrix:
    """Pixel confusion matrix over ``num_classes`` classes with an ignore label.

    Ground-truth pixels equal to ``ignore_label`` are not counted at all. A predicted value
    outside [0, num_classes) (e.g. 255 "no prediction") is counted in an extra column: a false
    negative for the true class and a false positive for no class, exactly like a prediction of
    an ignored label id in the official Cityscapes evaluator. Any other ground-truth value
    outside [0, num_classes) is an error: it means a label map in the wrong id space.

    Parameters
    ----------
    num_classes : int
        Number of evaluated classes (19 for GTA5 -> Cityscapes, 16 for SYNTHIA -> Cityscapes).
    ignore_label : int
        Ground-truth value excluded from evaluation.
    """

    def __init__(self, num_classes, ignore_label=255):
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_label = int(ignore_label)
        # int64: 500 images x 2 Mpixel = 1e9 pixels, beyond int32
        self.matrix = np.zeros((self.num_classes, self.num_classes + 1), dtype=np.int64)

    def update(self, pred, gt):
        """Add one prediction / ground-truth pair (any equal shapes, integer arrays).

        Raises
        ------
        ValueError
            If the shapes differ or ``gt`` holds a value that is neither a class nor the
            ignore label.
        """
        pred = np.asarray(pred)
        gt = np.asarray(gt)
        if pred.shape != gt.shape:
            raise ValueError(f"prediction shape {pred.shape} != ground-truth shape {gt.shape}")
        gt = gt.astype(np.int64).ravel()
        pred = pred.astype(np.int64).ravel()
        keep = gt != self.ignore_label
        gt, pred = gt[keep], pred[keep]
        if gt.size and (gt.min() < 0 or gt.max() >= self.num_classes):
            bad = np.unique(gt[(gt < 0) | (gt >= self.num_classes)])
            raise ValueError(
                f"ground truth holds values {bad.tolist()[:10]} outside [0, {self.num_classes}) "
                f"that are not the ignore label {self.ignore_label}: expected train ids"
            )
        pred = np.where((pred < 0) | (pred >= self.num_classes), self.num_classes, pred)
        flat = gt * (self.num_classes + 1) + pred
        self.matrix += np.bincount(flat, minlength=self.matrix.size).reshape(self.matrix.shape)
        return self

    def iou(self):
        """Per-class IoU in [0, 1], shape (num_classes,); NaN where a class is absent from both
        ground truth and prediction. See :func:`intersection_over_union`."""
        return intersection_over_union(self.matrix)

    def miou(self, classes=None):
        """Mean IoU over ``classes`` (indices; default all), ignoring NaN classes.

        For SYNTHIA -> Cityscapes pass ``mlsl_gluon.data.classes.MIOU13_CLASSES`` for mIoU*.
        Returns NaN if every selected class is NaN.
        """
        iou = self.iou()
        if classes is not None:
            iou = iou[np.asarray(list(classes), dtype=np.int64)]
        if np.all(np.isnan(iou)):
            return float("nan")
        return float(np.nanmean(iou))

    def pixel_accuracy(self):
        """Fraction of non-ignored pixels predicted correctly."""
        total = self.matrix.sum()
        return float(np.trace(self.matrix[:, : self.num_classes]) / total) if total else float("nan")

    def merge(self, other):
        """Add another matrix (e.g. from a shard of the dataset) into this one, in place."""
        if not isinstance(other, ConfusionMatrix):
            raise TypeError(f"can only merge a ConfusionMatrix, got {type(other).__name__}")
        if (other.num_classes, other.ignore_label) != (self.num_classes, self.ignore_label):
            raise ValueError(
                f"cannot merge a {other.num_classes}-class matrix (ignore {other.ignore_label}) "
                f"into a {self.num_classes}-class one (ignore {self.ignore_label})"
            )
        self.matrix += other.matrix
        return self

    def __add__(self, other):
        return self.copy().merge(other)

    def copy(self):
        out = ConfusionMatrix(self.num_classes, self.ignore_label)
        out.matrix = self.matrix.copy()
        return out

    def save(self, path):
        """Write the matrix to a JSON file (exact integer counts)."""
        payload = {
            "format": _FORMAT,
            "num_classes": self.num_classes,
            "ignore_label": self.ignore_label,
            "matrix": self.matrix.tolist(),
        }
        Path(path).write_text(json.dumps(payload))

    @classmethod
    def load(cls, path):
        """Read a matrix written by :meth:`save`; clear error naming the file if it is not one."""
        path = Path(path)
        try:
            payload = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: cannot read a confusion matrix JSON file ({err})") from err
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
            raise ValueError(f"{path}: not a confusion matrix file (missing format '{_FORMAT}')")
        try:
            out = cls(payload["num_classes"], payload["ignore_label"])
            matrix = np.asarray(payload["matrix"], dtype=np.int64)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: malformed confusion matrix file ({err})") from err
        if matrix.shape != out.matrix.shape or (matrix < 0).any():
            raise ValueError(
                f"{path}: matrix has shape {matrix.shape} (expected {out.matrix.shape}) "
                "or negative counts"
            )
        out.matrix = matrix
        return out

    def __eq__(self, other):
        return (
            isinstance(other, ConfusionMatrix)
            and self.num_classes == other.num_classes
            and self.ignore_label == other.ignore_label
            and np.array_equal(self.matrix, other.matrix)
        )

    def __repr__(self):
        return (
            f"ConfusionMatrix(num_classes={self.num_classes}, pixels={int(self.matrix.sum())}, "
            f"mIoU={self.miou():.4f})"
        )

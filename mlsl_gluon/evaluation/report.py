"""Per-class IoU reports in a run folder: ``iou.json`` (machine), ``iou.txt`` (human), and the
raw ``confusion_matrix.json`` (for merging shards or recomputing)."""
import json
import logging
import math
from pathlib import Path

from ..data.classes import MIOU13_CLASSES, class_names
from .confusion import ConfusionMatrix

logger = logging.getLogger(__name__)

IOU_FILE = "iou.json"
TABLE_FILE = "iou.txt"
MATRIX_FILE = "confusion_matrix.json"


def _json_float(value):
    return None if value is None or math.isnan(value) else float(value)


def evaluation_summary(matrix, names=None):
    """Per-class IoU with class names, mIoU (and mIoU* for 16 classes) of a ConfusionMatrix.

    Parameters
    ----------
    matrix : ConfusionMatrix
    names : sequence of str, optional
        Class names; default the 19 Cityscapes or 16 SYNTHIA classes by ``num_classes``.

    Returns
    -------
    dict
        ``num_classes``, ``class_names``, ``iou`` (list, fractions in [0, 1], None = class
        absent from ground truth and prediction), ``miou``, ``miou13`` (16 classes only: the
        paper's mIoU* over ``MIOU13_CLASSES``), ``pixel_accuracy``, ``pixels``.
    """
    names = list(names if names is not None else class_names(matrix.num_classes))
    if len(names) != matrix.num_classes:
        raise ValueError(f"{len(names)} class names for {matrix.num_classes} classes")
    summary = {
        "num_classes": matrix.num_classes,
        "class_names": names,
        "iou": [_json_float(v) for v in matrix.iou()],
        "miou": _json_float(matrix.miou()),
        "pixel_accuracy": _json_float(matrix.pixel_accuracy()),
        "pixels": int(matrix.matrix.sum()),
    }
    if matrix.num_classes == 16:
        summary["miou13"] = _json_float(matrix.miou(MIOU13_CLASSES))
    return summary


def format_per_class(summary):
    """A readable per-class IoU table (percent) from :func:`evaluation_summary`."""
    width = max(len(n) for n in summary["class_names"]) + 2
    lines = [f"{'class':<{width}}{'IoU (%)':>8}", "-" * (width + 8)]
    for name, value in zip(summary["class_names"], summary["iou"]):
        lines.append(f"{name:<{width}}{_pct(value):>8}")
    lines.append("-" * (width + 8))
    lines.append(f"{'mIoU':<{width}}{_pct(summary['miou']):>8}")
    if "miou13" in summary:
        lines.append(f"{'mIoU* (13)':<{width}}{_pct(summary['miou13']):>8}")
    lines.append(f"{'pixel acc.':<{width}}{_pct(summary['pixel_accuracy']):>8}")
    return "\n".join(lines) + "\n"


def _pct(value):
    return "n/a" if value is None else f"{100 * value:.2f}"


def write_evaluation(out_dir, matrix, metadata=None):
    """Write ``iou.json``, ``iou.txt`` and ``confusion_matrix.json`` into ``out_dir``.

    Parameters
    ----------
    out_dir : str or Path
        Run folder (created if needed).
    matrix : ConfusionMatrix
    metadata : dict, optional
        JSON-serialisable facts stored under ``"metadata"`` in ``iou.json`` (weights file,
        scales, flip, dataset root...).

    Returns
    -------
    dict
        The summary written (see :func:`evaluation_summary`).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = evaluation_summary(matrix)
    record = dict(summary, metadata=dict(metadata or {}))
    (out_dir / IOU_FILE).write_text(json.dumps(record, indent=2))
    (out_dir / TABLE_FILE).write_text(format_per_class(summary))
    matrix.save(out_dir / MATRIX_FILE)
    logger.info("wrote %s, %s and %s in %s", IOU_FILE, TABLE_FILE, MATRIX_FILE, out_dir)
    return summary


def read_evaluation(path):
    """Read an ``iou.json`` (or the run folder holding one) written by :func:`write_evaluation`.

    Raises
    ------
    ValueError
        Naming the file when it is missing, not JSON, or lacks the per-class IoU list.
    """
    path = Path(path)
    if path.is_dir():
        path = path / IOU_FILE
    if not path.is_file():
        raise ValueError(f"{path}: no evaluation result; run `mlsl-gluon evaluate --out "
                         f"{path.parent}` first")
    try:
        record = json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"{path}: not a JSON file ({err})") from err
    iou = record.get("iou") if isinstance(record, dict) else None
    if not isinstance(iou, list) or len(iou) != record.get("num_classes"):
        raise ValueError(f"{path}: missing 'iou' list of length 'num_classes'")
    return record


def load_matrix(path):
    """ConfusionMatrix from a run folder or a ``confusion_matrix.json`` file."""
    path = Path(path)
    return ConfusionMatrix.load(path / MATRIX_FILE if path.is_dir() else path)

"""Prediction files in the form the official Cityscapes evaluator reads: labelId PNGs.

cityscapesscripts' evalPixelLevelSemanticLabeling compares 8-bit single-channel PNGs holding
Cityscapes label ids (0..33, e.g. road = 7), not train ids, against *_gtFine_labelIds.png.
"""
from pathlib import Path

import numpy as np
from cityscapesscripts.helpers.labels import name2label
from PIL import Image

from ..data.classes import class_names

# Label id 0 ("unlabeled") is ignored in evaluation: written where the network gave no class,
# the official evaluator counts it as a miss, as ConfusionMatrix does for values >= C.
_NO_CLASS_LABEL_ID = 0


def train_id_to_label_id_lut(num_classes):
    """uint8 LUT (256,) mapping a 19- or 16-class train id to its Cityscapes label id.

    Values outside [0, num_classes) map to label id 0 ("unlabeled").
    """
    lut = np.full(256, _NO_CLASS_LABEL_ID, dtype=np.uint8)
    for train_id, name in enumerate(class_names(num_classes)):
        lut[train_id] = name2label[name].id
    return lut


def save_label_id_png(path, pred, num_classes):
    """Write a (H, W) train-id prediction as an 8-bit labelId PNG for the official evaluator.

    Parameters
    ----------
    path : str or Path
        Output file; parent folders are created.
    pred : ndarray, shape (H, W), integer
        Predicted train ids; values outside [0, num_classes) are written as label id 0.
    num_classes : int
        19 or 16 (which train-id table ``pred`` uses).
    """
    pred = np.asarray(pred)
    if pred.ndim != 2:
        raise ValueError(f"prediction for {path} must be 2-D (H, W), got shape {pred.shape}")
    idx = np.clip(pred.astype(np.int64), -1, 255)
    idx[idx < 0] = 255
    out = train_id_to_label_id_lut(num_classes)[idx]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(out, mode="L").save(path)

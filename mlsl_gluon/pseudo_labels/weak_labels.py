"""Pseudo weak labels (PWL) of target images, paper Sec. 3.3.1, and the released per-crop variant."""
import numpy as np

from ..data.classes import CITYSCAPES_19_NAMES, SYNTHIA_16_NAMES
from .selection import IGNORE_LABEL

# The released code's fixed class prior f (19 train ids, road..bicycle; SPEC section 4).
RELEASED_CLASS_PRIOR_19 = np.array([
    0.3232, 0.085, 0.1693, 0.0193, 0.0075, 0.0107, 0.0018, 0.0013, 0.0765, 0.0220, 0.1364,
    0.0039, 0.0023, 0.0274, 0.0169, 0.0181, 0.0143, 0.0019, 0.0031])
RELEASED_PRESENCE_FACTOR = 0.0225


def pseudo_weak_labels(pseudo_label, class_mean_sizes, eta=0.05):
    """PWL vector c^pwl of one target image (paper Sec. 3.3.1).

    h_t(i) is the fraction of the image's pseudo-labelled pixels (label != 255) that are class
    i; c_i^pwl = 1 if h_t(i) > eta * h_s(i), with h_s = m from Eq. 4.

    Parameters
    ----------
    pseudo_label : ndarray
        (H, W) uint8 SISC pseudo-label, 255 = not selected.
    class_mean_sizes : ndarray
        (C,) h_s of Eq. 4 (:func:`class_mean_sizes`).
    eta : float
        The user's factor (paper default 0.05).

    Returns
    -------
    ndarray
        (C,) uint8 0/1; all zero when no pixel is pseudo-labelled.
    """
    h_s = np.asarray(class_mean_sizes, dtype=np.float64)
    label = np.asarray(pseudo_label).ravel()
    labelled = label[label != IGNORE_LABEL]
    if labelled.size and labelled.max() >= h_s.size:
        raise ValueError(f"pseudo-label holds class {int(labelled.max())} but only {h_s.size} "
                         "class sizes were given")
    if labelled.size == 0:
        return np.zeros(h_s.size, dtype=np.uint8)
    h_t = np.bincount(labelled, minlength=h_s.size) / float(labelled.size)
    return (h_t > eta * h_s).astype(np.uint8)


def released_class_prior(num_classes):
    """The released code's fixed prior f for 19 classes, or its 16 SYNTHIA-class entries."""
    if num_classes == 19:
        return RELEASED_CLASS_PRIOR_19.copy()
    if num_classes == 16:
        return RELEASED_CLASS_PRIOR_19[[CITYSCAPES_19_NAMES.index(n) for n in SYNTHIA_16_NAMES]]
    raise ValueError(f"the released class prior exists for 19 or 16 classes, not {num_classes}")


def released_per_crop_weak_labels(label8, num_classes=19, factor=RELEASED_PRESENCE_FACTOR,
                                  class_prior=None):
    """Released-code variant of weak labels, computed per training crop (not in the paper).

    Class c is present when its pixel count on the crop's stride-8 label grid is
    >= factor * (grid pixels) * f_c, with the released code's fixed prior f.

    Parameters
    ----------
    label8 : ndarray
        (h, w) or (N, h, w) stride-8 labels of a crop (255 = ignore; float or int).
    num_classes : int
        C (19, or 16 with the SYNTHIA entries of f).
    factor : float
        0.0225 in the released code.
    class_prior : ndarray, optional
        (C,) f; default :func:`released_class_prior`.

    Returns
    -------
    ndarray
        (C,) or (N, C) uint8 0/1.
    """
    prior = released_class_prior(num_classes) if class_prior is None else np.asarray(class_prior)
    arr = np.asarray(label8)
    batch = arr.reshape((-1,) + arr.shape[-2:]).astype(np.int64)
    grid_pixels = batch.shape[1] * batch.shape[2]
    out = np.zeros((batch.shape[0], num_classes), dtype=np.uint8)
    for n, lab in enumerate(batch):
        counts = np.bincount(lab[lab != IGNORE_LABEL], minlength=num_classes)[:num_classes]
        out[n] = counts >= factor * grid_pixels * prior
    return out if arr.ndim == 3 else out[0]

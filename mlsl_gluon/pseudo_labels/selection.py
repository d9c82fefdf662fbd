"""Class-balanced pseudo-label selection (CBST, used by MLSL Sec. 3.2) and the spatial prior.

Given the class thresholds k_c of :mod:`.thresholds`, a pixel is labelled argmax_c s_c / k_c
when that ratio is >= 1, else 255 (SPEC section 3), the score s_c being the probability p_c or,
with the spatial prior (CBST-SP), p_c(x) * prior_c(x). Empty-class and zero-threshold rules:
k_c = 1 for a class that is never the argmax, whose rank is 0, or whose score at the rank is 0
(possible with the prior; CBST sets such a threshold to 1, ``issegm/solve_ST.py:947``), and a
threshold <= 0 handed to the selection counts as 1: such a class selects no pixel (only a score
of exactly 1 would pass, and a prior-weighted score is below 1).
"""
import logging

import cv2
import numpy as np

logger = logging.getLogger(__name__)

IGNORE_LABEL = 255


def class_argmax(prob_map):
    """Argmax over classes and the maximum of a (C, H, W) map (first class on ties).

    Equivalent to ``prob_map.argmax(0), prob_map.max(0)``; a loop over classes reads the map
    contiguously and is about 8x faster than numpy's strided reduction over axis 0.
    """
    best = np.array(prob_map[0], dtype=prob_map.dtype, copy=True)
    index = np.zeros(best.shape, dtype=np.int64)
    for c in range(1, prob_map.shape[0]):
        better = prob_map[c] > best
        np.copyto(best, prob_map[c], where=better)
        index[better] = c
    return index, best


def top_classes(score_map, top):
    """The ``top`` highest-scoring classes of a (C, H, W) map and their scores, by a loop over classes.

    Returns
    -------
    index : ndarray
        (top, H, W) int64, highest first (the lower class on ties, as a stable sort).
    value : ndarray
        (top, H, W) of score_map's dtype; -inf where C < top.
    """
    score_map = np.asarray(score_map)
    value = np.full((top,) + score_map.shape[1:], -np.inf, dtype=score_map.dtype)
    index = np.zeros(value.shape, dtype=np.uint8)
    # Blocks of rows that stay in the CPU cache through the class loop (about 3x faster than
    # whole-image passes at 1024x2048).
    rows = max(1, 65536 // max(1, int(np.prod(score_map.shape[2:]))))
    for y in range(0, score_map.shape[1], rows):
        _insert_classes(score_map[:, y:y + rows], value[:, y:y + rows], index[:, y:y + rows])
    return index.astype(np.int64), value


def _insert_classes(score_map, value, index):
    # Insertion of each class into the sorted slots: class c goes below kept classes with an
    # equal score (earlier classes win ties); once it has taken a slot, every later slot's
    # holder moves one down.
    carry_value = np.empty_like(value[0])
    carry_index = np.empty_like(index[0])
    swap = np.empty(value.shape[1:], dtype=bool)
    moved = np.empty_like(swap)
    held_value = np.empty_like(carry_value)
    held_index = np.empty_like(carry_index)
    for c in range(score_map.shape[0]):
        np.copyto(carry_value, score_map[c])
        carry_index.fill(c)
        moved.fill(False)
        for t in range(value.shape[0]):
            np.greater(carry_value, value[t], out=swap)
            swap |= moved
            np.copyto(moved, swap)
            np.copyto(held_value, value[t])
            np.copyto(held_index, index[t])
            np.copyto(value[t], carry_value, where=swap)
            np.copyto(index[t], carry_index, where=swap)
            np.copyto(carry_value, held_value, where=swap)
            np.copyto(carry_index, held_index, where=swap)


def _usable_thresholds(thresholds):
    # Zero-threshold rule (module docstring): k <= 0 selects nothing, as k = 1 does.
    k = np.asarray(thresholds, dtype=np.float64)
    return np.where(k > 0, k, 1.0)


def select_pseudo_labels(score_map, thresholds):
    """Pseudo-label = argmax_c s_c / k_c where that maximum is >= 1, else 255 (CBST selection).

    Ratios are computed in float64 (a float32 score s >= k exactly when s / k >= 1), class by
    class; ties go to the lower class.

    Parameters
    ----------
    score_map : ndarray
        (C, H, W) probabilities (prior-weighted if a spatial prior is used).
    thresholds : ndarray
        (C,) k_c from :func:`class_balanced_thresholds`; k_c <= 0 counts as 1.

    Returns
    -------
    ndarray
        (H, W) uint8 train ids, 255 = not selected.
    """
    k = _usable_thresholds(thresholds)
    score_map = np.asarray(score_map)
    best = np.full(score_map.shape[1:], -np.inf)
    index = np.zeros(best.shape, dtype=np.uint8)
    for c in range(score_map.shape[0]):
        ratio = score_map[c].astype(np.float64) / k[c]
        better = ratio > best
        np.copyto(best, ratio, where=better)
        index[better] = c
    index[best < 1.0] = IGNORE_LABEL
    return index


def select_from_top_classes(top_class, top_score, thresholds):
    """:func:`select_pseudo_labels` on a map kept as its T highest-scoring classes per pixel.

    Equal to the full map's selection at every pixel where the full map's winner is among the
    T kept classes or no class passes (then no kept class passes either).

    Parameters
    ----------
    top_class : ndarray
        (T, H, W) uint8 class ids, 255 = no class (e.g. a pixel no patch covered).
    top_score : ndarray
        (T, H, W) scores of those classes.
    thresholds : ndarray
        (C,) k_c; k_c <= 0 counts as 1.

    Returns
    -------
    ndarray
        (H, W) uint8 train ids, 255 = not selected.
    """
    k = np.append(_usable_thresholds(thresholds), np.inf)  # index 255 -> never selected
    cls = np.where(top_class == IGNORE_LABEL, len(k) - 1, top_class).astype(np.int64)
    ratio = np.asarray(top_score, dtype=np.float64) / k[cls]
    best = ratio.argmax(axis=0)
    label = np.take_along_axis(top_class, best[None], axis=0)[0].astype(np.uint8)
    label[np.take_along_axis(ratio, best[None], axis=0)[0] < 1.0] = IGNORE_LABEL
    return label


def resize_prior(prior, height, width):
    """Resize a (C, gh, gw) spatial prior bilinearly to (C, height, width) float32."""
    prior = np.asarray(prior, dtype=np.float32)
    if prior.ndim != 3:
        raise ValueError(f"spatial prior must be (C, gh, gw), got shape {prior.shape}")
    if prior.shape[1:] == (height, width):
        return prior
    # cv2 resizes (H, W, channels) arrays; channel counts up to 512 are supported.
    hwc = cv2.resize(np.ascontiguousarray(prior.transpose(1, 2, 0)), (width, height),
                     interpolation=cv2.INTER_LINEAR)
    return hwc.reshape(height, width, -1).transpose(2, 0, 1)


def apply_spatial_prior(prob_map, prior):
    """CBST-SP: multiply (C, H, W) probabilities by the spatial prior resized to (H, W)."""
    prob_map = np.asarray(prob_map, dtype=np.float32)
    if prior.shape[0] != prob_map.shape[0]:
        raise ValueError(f"spatial prior has {prior.shape[0]} classes, probabilities {prob_map.shape[0]}")
    return prob_map * resize_prior(prior, *prob_map.shape[1:])

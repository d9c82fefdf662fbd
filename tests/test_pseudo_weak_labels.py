"""Pseudo weak labels (paper Sec. 3.3.1) and the released code's per-crop variant."""
import numpy as np
import pytest

from mlsl_gluon.pseudo_labels import (
    RELEASED_CLASS_PRIOR_19,
    pseudo_weak_labels,
    released_class_prior,
    released_per_crop_weak_labels,
)


def test_pwl_known_answer():
    # 10 pixels, 2 unlabelled: 8 labelled -> h_t = [4/8, 3/8, 1/8, 0].
    label = np.array([[0, 0, 0, 0, 1], [1, 1, 2, 255, 255]], dtype=np.uint8)
    h_s = np.array([0.5, 8.0, 2.5, 0.0])
    # eta * h_s = [0.05, 0.8, 0.25, 0]: class 0 (0.5 > 0.05) on; class 1 (0.375 < 0.8) off;
    # class 2 (0.125 < 0.25) off; class 3 never in the image: 0 > 0 is false -> off.
    assert pseudo_weak_labels(label, h_s, eta=0.1).tolist() == [1, 0, 0, 0]
    # eta = 0: every class with a pixel is on.
    assert pseudo_weak_labels(label, h_s, eta=0.0).tolist() == [1, 1, 1, 0]


def test_pwl_is_strictly_greater():
    label = np.array([[0, 1]], dtype=np.uint8)  # h_t = [0.5, 0.5]
    assert pseudo_weak_labels(label, np.array([10.0, 9.0]), eta=0.05).tolist() == [0, 1]


def test_pwl_nothing_labelled_and_bad_class():
    assert pseudo_weak_labels(np.full((3, 3), 255, np.uint8), np.ones(4)).tolist() == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="class 5"):
        pseudo_weak_labels(np.array([[5]], np.uint8), np.ones(4))


def test_released_per_crop_known_answer():
    # 10 x 10 grid: threshold_c = 0.0225 * 100 * f_c; road f = 0.3232 -> 0.7272 pixels, so one
    # road pixel is enough; traffic sign (7) f = 0.0013 -> 0.0029: one pixel too; a class with
    # no pixel is never present; 255 pixels count in the grid but for no class.
    label8 = np.full((10, 10), 255, dtype=np.float32)
    label8[0, 0] = 0
    label8[1, 1] = 7
    out = released_per_crop_weak_labels(label8, 19)
    assert out.dtype == np.uint8 and out.shape == (19,)
    assert np.flatnonzero(out).tolist() == [0, 7]
    # With a larger factor road needs more pixels: 1 pixel < 0.5 * 100 * 0.3232.
    assert released_per_crop_weak_labels(label8, 19, factor=0.5)[0] == 0
    batch = np.stack([label8, np.full((10, 10), 2, np.float32)])
    assert released_per_crop_weak_labels(batch, 19)[1].tolist() == [0, 0, 1] + [0] * 16


def test_released_prior_tables():
    assert RELEASED_CLASS_PRIOR_19.shape == (19,)
    p16 = released_class_prior(16)
    # SYNTHIA order drops terrain (9), truck (14), train (16).
    assert p16.tolist() == np.delete(RELEASED_CLASS_PRIOR_19, [9, 14, 16]).tolist()
    with pytest.raises(ValueError):
        released_class_prior(7)

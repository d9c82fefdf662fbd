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


# SPEC section 4, "Released-code variant": the released code's fixed prior f, road..bicycle.
SPEC_PRIOR_19 = [0.3232, 0.085, 0.1693, 0.0193, 0.0075, 0.0107, 0.0018, 0.0013, 0.0765, 0.0220, 0.1364,
                 0.0039, 0.0023, 0.0274, 0.0169, 0.0181, 0.0143, 0.0019, 0.0031]
# The same without terrain (0.0220), truck (0.0169) and train (0.0143): SYNTHIA's 16 classes.
SPEC_PRIOR_16 = [0.3232, 0.085, 0.1693, 0.0193, 0.0075, 0.0107, 0.0018, 0.0013, 0.0765, 0.1364, 0.0039,
                 0.0023, 0.0274, 0.0181, 0.0019, 0.0031]


def test_released_prior_tables_are_specs_values():
    assert RELEASED_CLASS_PRIOR_19.tolist() == SPEC_PRIOR_19
    assert released_class_prior(19).tolist() == SPEC_PRIOR_19
    assert released_class_prior(16).tolist() == SPEC_PRIOR_16
    with pytest.raises(ValueError):
        released_class_prior(7)


def test_released_per_crop_at_factor_0_0225_on_a_504_crop():
    # A 504 crop has a 63 x 63 = 3969-cell stride-8 grid: class c needs at least
    # 0.0225 * 3969 * f_c = 89.3025 * f_c cells, i.e. road 28.86 -> 29, building 15.12 -> 16,
    # vegetation 6.83 -> 7, sky 12.18 -> 13, car 2.45 -> 3, person 0.35 -> 1.
    counts = [{0: 29, 2: 15, 8: 7, 13: 2, 11: 1},   # road, vegetation, person present
              {0: 28, 2: 16, 10: 12, 13: 3}]       # building, car present
    crops = np.full((2, 63, 63), 255, dtype=np.float32)
    for crop, classes in zip(crops, counts):
        flat = crop.reshape(-1)
        start = 0
        for c, n in classes.items():
            flat[start:start + n] = c
            start += n
    out = released_per_crop_weak_labels(crops, 19)
    assert out.shape == (2, 19)
    assert np.flatnonzero(out[0]).tolist() == [0, 8, 11]
    assert np.flatnonzero(out[1]).tolist() == [2, 13]
    # One cell more makes the classes just below their threshold present.
    crops[0].reshape(-1)[-1] = 2  # building 16
    crops[1].reshape(-1)[-1] = 10  # sky 13
    crops[1].reshape(-1)[-2] = 0  # road 29
    out = released_per_crop_weak_labels(crops, 19)
    assert np.flatnonzero(out[0]).tolist() == [0, 2, 8, 11]
    assert np.flatnonzero(out[1]).tolist() == [0, 2, 10, 13]

"""Class-balanced thresholds, selection, the probability grid and the spatial prior."""
import numpy as np
import pytest

from mlsl_gluon.pseudo_labels import (
    ThresholdAccumulator,
    apply_spatial_prior,
    class_balanced_thresholds,
    dequantise_probability,
    quantise_probability,
    select_from_top_classes,
    select_pseudo_labels,
)
from mlsl_gluon.pseudo_labels.selection import class_argmax, num_probability_codes, top_two_classes


def exact_thresholds(prob_maps, portion):
    """SPEC section 3 by sorting every pixel: the reference the histograms must match."""
    num_classes = prob_maps[0].shape[0]
    pred = np.concatenate([p.argmax(0).ravel() for p in prob_maps])
    conf = np.concatenate([p.max(0).ravel() for p in prob_maps])
    k = np.ones(num_classes)
    for c in range(num_classes):
        values = np.sort(conf[pred == c])[::-1]
        rank = int(np.floor(len(values) * portion))
        if rank:
            k[c] = values[rank - 1]
    return k


def random_maps(num, num_classes=5, shape=(13, 17), seed=0, sharp=3.0):
    rng = np.random.default_rng(seed)
    maps = []
    for _ in range(num):
        logits = rng.normal(size=(num_classes,) + shape) * sharp
        e = np.exp(logits - logits.max(0))
        maps.append((e / e.sum(0)).astype(np.float32))
    return maps


def test_grid_rounds_down_and_is_fine():
    p = np.concatenate([np.linspace(0, 1, 20001, dtype=np.float32),
                        1 - np.logspace(-7.5, -1, 500).astype(np.float32)])
    for shift, step in ((0, 4.9e-4), (2, 1.96e-3)):
        code = quantise_probability(p, shift)
        grid = dequantise_probability(code, shift)
        assert code.max() < num_probability_codes(shift)
        assert np.all(np.diff(code[:20001].astype(int)) >= 0)  # monotone
        assert np.all(grid <= p)
        assert np.max(p - grid) <= step
        # A grid point is its own code: p >= k  <=>  code(p) >= code(k).
        assert np.array_equal(quantise_probability(grid, shift), code)
    near_one = np.float32(1 - 1e-6)
    assert 1 - dequantise_probability(quantise_probability(near_one)) < 2e-6


def test_class_argmax_equals_numpy_including_ties():
    rng = np.random.default_rng(1)
    m = rng.integers(0, 3, size=(4, 9, 11)).astype(np.float32)  # many ties
    idx, best = class_argmax(m)
    assert np.array_equal(idx, m.argmax(0))
    assert np.array_equal(best, m.max(0))


def test_top_two_classes_equals_stable_sort():
    rng = np.random.default_rng(5)
    for m in (rng.random((6, 7, 9)).astype(np.float32),
              rng.integers(0, 3, size=(5, 8, 8)).astype(np.float32)):  # with ties
        idx, val = top_two_classes(m)
        order = np.argsort(-m, axis=0, kind="stable")[:2]
        assert np.array_equal(idx, order)
        assert np.array_equal(val, np.take_along_axis(m, order, axis=0))


def test_thresholds_known_answer():
    # 1 x 4 image, 3 classes. argmax: class 0 at pixels 0, 1, 2 with max 0.9, 0.7, 0.5;
    # class 1 at pixel 3 with 0.6; class 2 never.
    prob = np.array([[[0.9, 0.7, 0.5, 0.2]],
                     [[0.05, 0.2, 0.3, 0.6]],
                     [[0.05, 0.1, 0.2, 0.2]]], dtype=np.float32)
    k = class_balanced_thresholds([prob], portion=0.67)
    # class 0: N=3, rank floor(2.01)=2 -> 2nd largest = 0.7; class 1: rank 0 -> 1; class 2 absent -> 1.
    assert k[0] == pytest.approx(0.7, abs=5e-4) and k[0] <= 0.7
    assert k[1] == 1.0 and k[2] == 1.0
    label = select_pseudo_labels(prob, k)
    assert label.tolist() == [[0, 0, 255, 255]]


@pytest.mark.parametrize("portion", [0.0, 0.05, 0.2, 0.5, 1.0])
def test_thresholds_match_exact_sort(portion):
    maps = random_maps(6)
    maps[2][3] = 0.0  # class 3 absent from one image
    exact = exact_thresholds(maps, portion)
    k = class_balanced_thresholds(iter(maps), portion)
    assert np.all(np.abs(k - exact) <= 1e-3)
    assert np.all(k <= exact + 1e-7)


def test_saturated_probabilities_are_resolved():
    # An over-confident network: most pixels of class 0 have p within 1e-4 of 1.
    rng = np.random.default_rng(2)
    p0 = 1 - rng.uniform(1e-7, 1e-4, size=(1, 40, 50)).astype(np.float32)
    prob = np.concatenate([p0, 1 - p0], axis=0)
    exact = exact_thresholds([prob], 0.2)
    k = class_balanced_thresholds([prob], 0.2)
    selected = (select_pseudo_labels(prob, k) == 0).mean()
    assert abs(k[0] - exact[0]) < 1e-7
    assert selected == pytest.approx(0.2, abs=0.005)


def test_accumulator_merge_and_serialisation(tmp_path):
    maps = random_maps(5, seed=3)
    whole = ThresholdAccumulator(5)
    for m in maps:
        whole.update(m)
    a, b = ThresholdAccumulator(5), ThresholdAccumulator(5)
    for m in maps[:2]:
        a.update(m)
    for m in maps[2:]:
        b.update(m)
    path = tmp_path / "acc.npz"
    b.save(str(path))
    merged = a.merge(ThresholdAccumulator.load(str(path)))
    assert np.array_equal(merged.hist, whole.hist)
    assert np.array_equal(merged.thresholds(0.3), whole.thresholds(0.3))
    assert whole.hist.shape == (5, num_probability_codes(0))  # fixed, whatever the image count
    with pytest.raises(ValueError, match="shift"):
        a.merge(ThresholdAccumulator(5, shift=2))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="bad.npz"):
        ThresholdAccumulator.load(str(bad))


def test_select_known_answer_uses_ratio():
    # Pixel 0: p/k = (0.6/0.5, 0.4/0.2) -> class 1 wins by ratio although class 0 is more probable.
    # Pixel 1: (0.45/0.5, 0.15/0.2) both < 1 -> 255. Pixel 2: (0.9/0.5, 0.1/0.2) -> class 0.
    prob = np.array([[[0.6, 0.45, 0.9]], [[0.4, 0.15, 0.1]]], dtype=np.float32)
    k = np.array([0.5, 0.2])
    assert select_pseudo_labels(prob, k).tolist() == [[1, 255, 0]]
    order = np.argsort(-prob, axis=0)
    top_class = order.astype(np.uint8)
    top_prob = np.take_along_axis(prob, order, axis=0)
    assert select_from_top_classes(top_class, top_prob, k).tolist() == [[1, 255, 0]]
    # Only the argmax kept: pixel 0 falls back to class 0 (0.6 >= 0.5).
    assert select_from_top_classes(top_class[:1], top_prob[:1], k).tolist() == [[0, 255, 0]]
    # A pixel marked 255 (no prediction) is never selected.
    top_class[:, 0, 2] = 255
    assert select_from_top_classes(top_class, top_prob, k)[0, 2] == 255


def test_all_classes_kept_equals_dense_selection():
    maps = random_maps(3, num_classes=4, seed=4)
    k = class_balanced_thresholds(maps, 0.4)
    for m in maps:
        order = np.argsort(-m, axis=0, kind="stable")
        sparse = select_from_top_classes(order.astype(np.uint8), np.take_along_axis(m, order, 0), k)
        assert np.array_equal(sparse, select_pseudo_labels(m, k))


def test_spatial_prior_multiplies_resized_prior():
    prob = np.full((2, 4, 6), 0.5, dtype=np.float32)
    prior = np.zeros((2, 2, 3), dtype=np.float32)
    prior[0] = 0.8
    prior[1] = 0.2
    out = apply_spatial_prior(prob, prior)
    assert out.shape == (2, 4, 6)
    assert np.allclose(out[0], 0.4) and np.allclose(out[1], 0.1)
    # A prior favouring class 1 in the top half flips the argmax there.
    prob = np.stack([np.full((4, 6), 0.6), np.full((4, 6), 0.4)]).astype(np.float32)
    prior = np.stack([np.array([[0.1], [0.9]]) * np.ones((2, 6)),
                      np.array([[0.9], [0.1]]) * np.ones((2, 6))]).astype(np.float32)
    weighted = apply_spatial_prior(prob, prior[:, :, :])
    assert weighted.argmax(0)[0].tolist() == [1] * 6 and weighted.argmax(0)[3].tolist() == [0] * 6
    k = class_balanced_thresholds([prob], 1.0, prior=prior)
    assert np.allclose(k, [weighted[0][weighted.argmax(0) == 0].min(),
                           weighted[1][weighted.argmax(0) == 1].min()], atol=1e-3)
    with pytest.raises(ValueError, match="classes"):
        apply_spatial_prior(prob, prior[:1])


def test_threshold_in_the_zero_bin_never_selects_zero_probability_pixels():
    # Class 1 is the argmax of pixels whose prior-weighted probabilities are all ~0, so its
    # rank falls in the zero bin; zero-probability pixels must not be labelled through 0 / 0.
    import warnings

    from mlsl_gluon.pseudo_labels.selection import select_from_top_classes

    prob = np.zeros((2, 4, 4), dtype=np.float32)
    prob[0, :2] = 0.9
    prob[1, 2:] = 1e-6
    k = class_balanced_thresholds([prob], portion=0.5)
    assert k[1] > 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        label = select_pseudo_labels(prob, k)
        top_class = np.stack([prob.argmax(0), 1 - prob.argmax(0)]).astype(np.uint8)
        top_prob = np.take_along_axis(prob, top_class.astype(np.int64), axis=0)
        top_prob[:, 2:] = 0.0
        top_label = select_from_top_classes(top_class, top_prob, k)
    assert (label[:2] == 0).all()
    assert (top_label[2:] == 255).all()

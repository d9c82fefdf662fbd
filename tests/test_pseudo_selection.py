"""Class-balanced thresholds (exact, grid, released sampling), selection rules, the probability
grid and the spatial prior."""
import warnings

import numpy as np
import pytest

from mlsl_gluon.pseudo_labels import (
    ThresholdAccumulator,
    ThresholdRefinement,
    apply_spatial_prior,
    class_balanced_thresholds,
    dequantise_probability,
    quantise_probability,
    select_from_top_classes,
    select_pseudo_labels,
)
from mlsl_gluon.pseudo_labels.grid import coarsen_codes, num_probability_codes
from mlsl_gluon.pseudo_labels.selection import class_argmax, top_classes
from mlsl_gluon.pseudo_labels.thresholds import CodeRefinement, released_sample_indices

C = 19


def exact_thresholds(score_maps, portion):
    """SPEC section 3 by sorting every pixel: k_c = the score at rank floor(N_c * p), descending;
    1 if the class never occurs, the rank is 0 or the score there is 0."""
    pred = np.concatenate([s.argmax(0).ravel() for s in score_maps])
    conf = np.concatenate([s.max(0).ravel() for s in score_maps])
    k = np.ones(score_maps[0].shape[0])
    for c in range(len(k)):
        values = np.sort(conf[pred == c])[::-1]
        rank = int(np.floor(len(values) * portion))
        if rank and values[rank - 1] > 0:
            k[c] = values[rank - 1]
    return k


def dirichlet_maps(num, shape=(24, 40), seed=0):
    """Random 19-class maps: class 16 never the argmax, class 17 the argmax of exactly one pixel."""
    rng = np.random.default_rng(seed)
    maps = []
    for _ in range(num):
        p = rng.dirichlet(np.full(C, 0.3), size=shape).transpose(2, 0, 1).astype(np.float32)
        p[16:18] = 0.0
        maps.append(p)
    maps[0][:, 3, 5] = 1e-7
    maps[0][17, 3, 5] = 1 - 18e-7  # the one pixel of class 17
    return maps


def random_prior(seed=0):
    """A (C, 4, 6) prior, smoothed as source priors are (no class ruled out anywhere)."""
    rng = np.random.default_rng(seed + 100)
    prior = 0.9 * rng.dirichlet(np.full(C, 0.2), size=(4, 6)) + 0.1 / C
    return prior.transpose(2, 0, 1).astype(np.float32)


def test_grid_rounds_down_and_is_relative():
    rng = np.random.default_rng(0)
    p = np.concatenate([rng.random(20000), 10 ** rng.uniform(-9, 0, 20000),
                        1 - 10 ** rng.uniform(-7.2, -0.4, 20000)]).astype(np.float32)
    p = np.concatenate([p, np.float32([0, 1, 0.5, 2 ** -32, 1e-40])])
    for fine, coarse in ((-2, 0), (-3, 2), (0, 2)):
        assert np.array_equal(coarsen_codes(quantise_probability(p, fine), fine, coarse),
                              quantise_probability(p, coarse))
    for shift in (0, 2, -2):
        n = num_probability_codes(shift)
        points = dequantise_probability(np.arange(n), shift)
        assert np.all(np.diff(points) > 0) and points[0] == 0 and points[-1] == 1
        # Every grid point is its own code: s >= k  <=>  code(s) >= code(k) for grid points k.
        assert np.array_equal(quantise_probability(points, shift), np.arange(n))
        code = quantise_probability(p, shift).astype(np.int64)
        assert code.max() < n
        assert np.all(points[code] <= p)
        assert np.all((points[np.minimum(code + 1, n - 1)] > p) | (code == n - 1))
        step = 2.0 ** -(10 - shift)
        ranked = p >= 2 ** -32
        assert np.all(p[ranked] - points[code[ranked]] < step * p[ranked])
        near_one = p > 0.5
        assert np.all(p[near_one] - points[code[near_one]] <= step * (1 - points[code[near_one]]))


def test_class_argmax_and_top_classes_equal_stable_sort():
    rng = np.random.default_rng(1)
    for m in (rng.random((6, 7, 9)).astype(np.float32),
              rng.integers(0, 3, size=(5, 8, 8)).astype(np.float32)):  # with ties
        idx, best = class_argmax(m)
        assert np.array_equal(idx, m.argmax(0)) and np.array_equal(best, m.max(0))
        for top in (1, 2, 3):
            idx, val = top_classes(m, top)
            order = np.argsort(-m, axis=0, kind="stable")[:top]
            assert np.array_equal(idx, order)
            assert np.array_equal(val, np.take_along_axis(m, order, axis=0))
    idx, val = top_classes(np.ones((2, 3, 3), np.float32), 3)  # T > C: the extra slot is empty
    assert np.all(np.isneginf(val[2]))


def test_thresholds_known_answer():
    # 1 x 4 image, 3 classes. argmax: class 0 at pixels 0, 1, 2 with max 0.9, 0.7, 0.5;
    # class 1 at pixel 3 with 0.6; class 2 never.
    prob = np.array([[[0.9, 0.7, 0.5, 0.2]],
                     [[0.05, 0.2, 0.3, 0.6]],
                     [[0.05, 0.1, 0.2, 0.2]]], dtype=np.float32)
    k = class_balanced_thresholds([prob], portion=0.67)
    # class 0: N=3, rank floor(2.01)=2 -> 2nd largest = 0.7; class 1: rank 0 -> 1; class 2 absent -> 1.
    assert k.tolist() == [np.float32(0.7), 1.0, 1.0]
    assert select_pseudo_labels(prob, k).tolist() == [[0, 0, 255, 255]]


@pytest.mark.parametrize("with_prior", [False, True])
@pytest.mark.parametrize("portion", [0.15, 0.5])
def test_thresholds_equal_exact_sort_and_grid_within_bound(portion, with_prior):
    maps = dirichlet_maps(3)
    prior = random_prior() if with_prior else None
    scores = [m if prior is None else apply_spatial_prior(m, prior) for m in maps]
    reference = exact_thresholds(scores, portion)
    assert reference[16] == 1.0 and reference[17] == 1.0  # never the argmax; one pixel (rank 0)
    exact = class_balanced_thresholds(maps, portion, prior=prior)
    assert np.array_equal(exact, reference)
    grid = class_balanced_thresholds(maps, portion, prior=prior, exact=False)
    ranked = reference >= 1e-6
    assert np.all(np.abs(grid[ranked] - reference[ranked]) <= 2 ** -10 * reference[ranked])
    assert np.array_equal(grid[reference == 1.0], reference[reference == 1.0])
    # The one-pixel class and the absent class select nothing.
    labels = np.stack([select_pseudo_labels(s, exact) for s in scores])
    assert not np.isin(labels, [16, 17]).any()


def test_exact_thresholds_need_a_sequence():
    maps = dirichlet_maps(2)
    with pytest.raises(ValueError, match="twice"):
        class_balanced_thresholds(iter(maps), 0.5)
    assert np.array_equal(class_balanced_thresholds(iter(maps), 0.5, exact=False),
                          class_balanced_thresholds(maps, 0.5, exact=False))


def test_saturated_probabilities_are_resolved():
    # An over-confident network: most pixels of class 0 have p within 1e-4 of 1.
    rng = np.random.default_rng(2)
    p0 = 1 - rng.uniform(1e-7, 1e-4, size=(1, 40, 50)).astype(np.float32)
    prob = np.concatenate([p0, 1 - p0], axis=0)
    reference = exact_thresholds([prob], 0.2)
    grid = class_balanced_thresholds([prob], 0.2, exact=False)
    assert abs(grid[0] - reference[0]) <= 2 ** -10 * (1 - reference[0])
    assert (select_pseudo_labels(prob, grid) == 0).mean() == pytest.approx(0.2, abs=0.005)
    assert class_balanced_thresholds([prob], 0.2)[0] == reference[0]


def test_zero_threshold_and_empty_class_select_nothing():
    # Row 0: class 1 with 0.9. Rows 1-3: every score 0, so class 0 (first on ties) is their argmax
    # with score 0; its rank falls on a 0 -> k = 1 (CBST), not "every pixel passes".
    prob = np.zeros((3, 4, 4), dtype=np.float32)
    prob[1, 0] = 0.9
    for exact in (True, False):
        k = class_balanced_thresholds([prob], 0.5, exact=exact)
        assert k[0] == 1.0 and k[2] == 1.0
        assert k[1] == np.float32(0.9) if exact else 0 < np.float32(0.9) - k[1] < 2 ** -10 * 0.9
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no 0 / 0
            label = select_pseudo_labels(prob, k)
        assert (label[0] == 1).all() and (label[1:] == 255).all()
    # A threshold of 0 handed to the selection also selects nothing.
    prob[0, 1:] = 1e-3
    assert (select_pseudo_labels(prob, [0.0, np.float32(0.9), 0.0])[1:] == 255).all()
    top = np.argsort(-prob, axis=0, kind="stable")[:2]
    k = [0.0, np.float32(0.9), 0.0]
    label = select_from_top_classes(top.astype(np.uint8), np.take_along_axis(prob, top, 0), k)
    assert (label[1:] == 255).all() and (label[0] == 1).all()


def released_example():
    # Two 2 x 5 images, 3 classes; scores = the max at the argmax class, 0.01 elsewhere.
    # Image A, raster order: class 0 at the 6 pixels with 0.9 0.8 0.7 0.6 0.5 0.4; class 1 at
    # 0.7 0.65 0.6 (interleaved); pixel 9 class 0 too (0.45).
    a_cls = [[0, 1, 0, 0, 1], [0, 0, 1, 0, 0]]
    a_val = [[0.9, 0.7, 0.8, 0.7, 0.65], [0.6, 0.5, 0.6, 0.4, 0.45]]
    # Image B: class 0 at 0.95 and 0.3, class 1 at the other pixels with 0.35.
    b_cls = [[0, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    b_val = [[0.95, 0.35, 0.35, 0.35, 0.35], [0.35, 0.35, 0.35, 0.35, 0.3]]
    maps = []
    for cls, val in ((a_cls, a_val), (b_cls, b_val)):
        m = np.full((3, 2, 5), 0.01, dtype=np.float32)
        np.put_along_axis(m, np.array(cls)[None], np.array(val, np.float32)[None], axis=0)
        maps.append(m)
    return maps


def test_released_sampling_hand_computed():
    maps = released_example()
    assert released_sample_indices(np.array([[0, 1, 0, 0, 1], [0, 0, 1, 0, 0]])).tolist() == [0, 1, 6]
    # Class 0 lists: A (7 pixels 0.9 0.8 0.7 0.6 0.5 0.4 0.45) keeps the 1st and 5th: 0.9, 0.5;
    # B (0.95, 0.3) keeps 0.95; with the prepended 0: [0, 0.9, 0.5, 0.95], N = 4.
    # Class 1: A (0.7 0.65 0.6) keeps 0.7; B (8 x 0.35) keeps 2 x 0.35: [0, 0.7, 0.35, 0.35], N = 4.
    f = np.float32
    expected = {0.5: [f(0.9), f(0.35), 1.0],     # rank 2
                0.15: [1.0, 1.0, 1.0],           # rank floor(0.6) = 0
                0.75: [f(0.5), f(0.35), 1.0],    # rank 3
                1.0: [1.0, 1.0, 1.0]}            # rank 4 = the prepended 0 -> 1
    for portion, k in expected.items():
        assert class_balanced_thresholds(maps, portion, released_sampling=True).tolist() == k
        grid = class_balanced_thresholds(maps, portion, released_sampling=True, exact=False)
        assert np.all(np.abs(grid - k) <= 2 ** -10 * np.array(k))
    acc = ThresholdAccumulator(3, released_sampling=True)
    for m in maps:
        acc.update(m)
    assert acc.class_counts().tolist() == [4, 4, 0]
    # Without the sample: class 0 has 9 pixels, rank 4 -> 0.7; class 1: 11 pixels, rank 5 -> 0.35.
    assert class_balanced_thresholds(maps, 0.5).tolist() == [f(0.7), f(0.35), 1.0]


@pytest.mark.parametrize("released", [False, True])
def test_shard_merge_equals_one_pass(tmp_path, released):
    maps = dirichlet_maps(5, seed=3)
    prior = random_prior(1)
    scores = [apply_spatial_prior(m, prior) for m in maps]
    whole = ThresholdAccumulator(C, released_sampling=released)
    for s in scores:
        whole.update(s)
    a, b = (ThresholdAccumulator(C, released_sampling=released) for _ in range(2))
    for s in scores[:2]:
        a.update(s)
    for s in scores[2:]:
        b.update(s)
    path = tmp_path / "acc.npz"
    b.save(str(path))
    merged = a.merge(ThresholdAccumulator.load(str(path)))
    assert np.array_equal(merged.hist, whole.hist)
    assert merged.hist.shape == (C, num_probability_codes(0))  # fixed, whatever the image count
    for portion in (0.15, 0.5):
        assert np.array_equal(merged.thresholds(portion), whole.thresholds(portion))
        refinement = ThresholdRefinement(merged, portion)
        for s in scores:
            refinement.update(s)
        one_pass = class_balanced_thresholds(maps, portion, prior=prior, released_sampling=released)
        assert np.array_equal(refinement.thresholds(), one_pass)
        # The round's refinement on 12-bit codes, over the shards' maps in any order.
        fine = CodeRefinement(merged, portion, -2)
        for s in scores[::-1]:
            index, best = class_argmax(s)
            fine.update_codes(index, quantise_probability(best, -2))
        k = fine.thresholds()
        ranked = one_pass < 1
        assert np.all(np.abs(k[ranked] - one_pass[ranked]) < 2 ** -12 * one_pass[ranked])
        assert np.array_equal(k[~ranked], one_pass[~ranked])


def test_merge_and_load_refuse_mismatches(tmp_path):
    a = ThresholdAccumulator(5)
    with pytest.raises(ValueError, match="shift"):
        a.merge(ThresholdAccumulator(5, shift=2))
    with pytest.raises(ValueError, match="released_sampling"):
        a.merge(ThresholdAccumulator(5, released_sampling=True))
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
    # s >= k exactly at the threshold: a float32 score equal to k passes.
    assert select_pseudo_labels(np.float32([[[0.3]]]), [np.float32(0.3)]).item() == 0


def test_all_classes_kept_equals_dense_selection():
    maps = dirichlet_maps(2, seed=4)
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
    weighted = apply_spatial_prior(prob, prior)
    assert weighted.argmax(0)[0].tolist() == [1] * 6 and weighted.argmax(0)[3].tolist() == [0] * 6
    k = class_balanced_thresholds([prob], 1.0, prior=prior)
    assert k.tolist() == [weighted[0][weighted.argmax(0) == 0].min(),
                          weighted[1][weighted.argmax(0) == 1].min()]
    with pytest.raises(ValueError, match="classes"):
        apply_spatial_prior(prob, prior[:1])

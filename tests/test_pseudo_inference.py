"""SI / SISC inference (paper Sec. 3.2): aggregation known answers, seeding, contexts."""
import dataclasses

import mxnet as mx
import numpy as np
import pytest
from mxnet.gluon import nn

from mlsl_gluon.config import Config, pseudo_label_settings
from mlsl_gluon.model import MLSLNet, init_params
from mlsl_gluon.pseudo_labels import (
    accumulate_patches,
    normalise_by_count,
    sample_patch_corners,
    single_inference,
    sisc_inference,
)


def sisc(net, image, ctx, seed=0, **fields):
    """sisc_inference with the config's step-1 settings at native scale, ``fields`` changed."""
    settings = dataclasses.replace(pseudo_label_settings(Config()), **{"longer_side": None, **fields})
    return sisc_inference(net, image, ctx, settings, seed)


class PixelwiseNet(nn.HybridBlock):
    """1x1 conv + softmax: each pixel's prediction ignores its context, so every SISC patch
    must reproduce the whole-image prediction exactly at its pixels."""

    def __init__(self, num_classes=3):
        super().__init__()
        self.num_classes = num_classes
        self.conv = nn.Conv2D(num_classes, 1, in_channels=3)

    def hybrid_forward(self, F, x):
        return self.conv(x)

    def predict(self, x, flip=False):
        prob = mx.nd.softmax(self(x), axis=1)
        return 0.5 * (prob + self.predict(x.flip(axis=3)).flip(axis=3)) if flip else prob


def pixelwise_net(ctx=mx.cpu()):
    net = PixelwiseNet()
    net.initialize(mx.init.Normal(1.0), ctx=ctx)
    return net


def test_two_overlapping_patches_known_answer():
    # 2 x 3 image, 2 classes; patch A covers columns 0-1, patch B columns 1-2.
    a = np.array([[[0.9, 0.6], [0.8, 0.7]], [[0.1, 0.4], [0.2, 0.3]]], dtype=np.float32)
    b = np.array([[[0.2, 0.5], [0.0, 1.0]], [[0.8, 0.5], [1.0, 0.0]]], dtype=np.float32)
    prob_sum = np.zeros((2, 2, 3), np.float32)
    count = np.zeros((2, 3), np.float32)
    accumulate_patches(prob_sum, count, np.stack([a, b]), np.array([[0, 0], [0, 1]]))
    assert count.tolist() == [[1, 2, 1], [1, 2, 1]]
    prob, covered = normalise_by_count(prob_sum, count)
    assert covered.all()
    np.testing.assert_allclose(prob[0], [[0.9, 0.4, 0.5], [0.8, 0.35, 1.0]], rtol=1e-6)
    np.testing.assert_allclose(prob[1], [[0.1, 0.6, 0.5], [0.2, 0.65, 0.0]], rtol=1e-6)
    # "vote" (relative frequency): A votes class 0 everywhere; B votes class 1 in its first
    # column and class 0 in its second (a 0.5/0.5 tie goes to the first class).
    vote_sum = np.zeros((2, 2, 3), np.float32)
    vote_count = np.zeros((2, 3), np.float32)
    accumulate_patches(vote_sum, vote_count, np.stack([a, b]), np.array([[0, 0], [0, 1]]), "vote")
    votes, _ = normalise_by_count(vote_sum, vote_count)
    assert votes[0].tolist() == [[1, 0.5, 1], [1, 0.5, 1]]
    assert votes[1].tolist() == [[0, 0.5, 0], [0, 0.5, 0]]
    with pytest.raises(ValueError, match="aggregation"):
        accumulate_patches(vote_sum, vote_count, a[None], np.zeros((1, 2), int), "mean")


def test_uncovered_pixels_stay_zero():
    prob_sum = np.zeros((2, 2, 2), np.float32)
    count = np.zeros((2, 2), np.float32)
    accumulate_patches(prob_sum, count, np.full((1, 2, 1, 1), 0.5, np.float32), np.array([[1, 1]]))
    prob, covered = normalise_by_count(prob_sum, count)
    assert covered.tolist() == [[False, False], [False, True]]
    assert prob[:, 0, 0].tolist() == [0, 0] and prob[:, 1, 1].tolist() == [0.5, 0.5]


def test_patch_corners_seeded_uniform_and_clipped():
    c1, size = sample_patch_corners(100, 200, 64, K=50, seed=7)
    c2, _ = sample_patch_corners(100, 200, 64, K=50, seed=7)
    c3, _ = sample_patch_corners(100, 200, 64, K=50, seed=8)
    assert size == (64, 64) and np.array_equal(c1, c2) and not np.array_equal(c1, c3)
    assert c1[:, 0].min() >= 0 and c1[:, 0].max() <= 36 and c1[:, 1].max() <= 136
    corners, _ = sample_patch_corners(3, 3, 2, K=200, seed=0)
    assert set(map(tuple, corners)) == {(0, 0), (0, 1), (1, 0), (1, 1)}  # every valid position
    corners, size = sample_patch_corners(20, 30, (64, 16), K=3, seed=0)
    assert size == (20, 16) and corners[:, 0].tolist() == [0, 0, 0]


def test_sisc_of_a_pixelwise_net_equals_si():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
    net = pixelwise_net()
    si = single_inference(net, image, mx.cpu(), flip=True)
    assert si.shape == (3, 37, 53)
    prob, covered = sisc(net, image, mx.cpu(), K=6, patch_size=16, seed=1, batch_size=4)
    assert covered.all()
    np.testing.assert_allclose(prob, si, atol=1e-6)
    # Without the SI prediction only the patches' pixels are covered; the rest stays 0.
    prob, covered = sisc(net, image, mx.cpu(), K=2, patch_size=8, seed=1, include_si=False)
    corners, _ = sample_patch_corners(37, 53, 8, 2, 1)
    expected = np.zeros((37, 53), bool)
    for y, x in corners:
        expected[y:y + 8, x:x + 8] = True
    assert np.array_equal(covered, expected)
    assert np.all(prob[:, ~covered] == 0)
    np.testing.assert_allclose(prob[:, covered], si[:, covered], atol=1e-6)
    with pytest.raises(ValueError, match="K >= 1"):
        sisc(net, image, mx.cpu(), K=0, include_si=False)


def test_longer_side_returns_full_resolution():
    image = np.zeros((40, 60, 3), np.uint8)
    net = pixelwise_net()
    assert single_inference(net, image, mx.cpu(), longer_side=30).shape == (3, 40, 60)
    prob, covered = sisc(net, image, mx.cpu(), K=2, patch_size=8, longer_side=30)
    assert prob.shape == (3, 40, 60) and covered.shape == (40, 60)


@pytest.fixture(scope="module")
def tiny_mlsl_two_ctx():
    mx.random.seed(0)
    net = MLSLNet(num_classes=5, width=1 / 32, with_classifier=False)
    init_params(net, ctx=[mx.cpu(0), mx.cpu(1)])
    return net


def test_seeded_sisc_is_reproducible(tiny_mlsl_two_ctx):
    image = np.random.default_rng(1).integers(0, 256, size=(48, 72, 3), dtype=np.uint8)
    kwargs = dict(K=5, patch_size=24, batch_size=2)
    a, _ = sisc(tiny_mlsl_two_ctx, image, mx.cpu(0), seed=3, **kwargs)
    b, _ = sisc(tiny_mlsl_two_ctx, image, mx.cpu(0), seed=3, **kwargs)
    c, _ = sisc(tiny_mlsl_two_ctx, image, mx.cpu(0), seed=4, **kwargs)
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)
    np.testing.assert_allclose(a.sum(0), 1, atol=1e-5)


def test_two_contexts_give_the_same_probabilities(tiny_mlsl_two_ctx):
    image = np.random.default_rng(2).integers(0, 256, size=(48, 72, 3), dtype=np.uint8)
    kwargs = dict(K=6, patch_size=24, seed=5, batch_size=4)
    one, _ = sisc(tiny_mlsl_two_ctx, image, [mx.cpu(0)], **kwargs)
    two, _ = sisc(tiny_mlsl_two_ctx, image, [mx.cpu(0), mx.cpu(1)], **kwargs)
    np.testing.assert_allclose(one, two, atol=1e-6)

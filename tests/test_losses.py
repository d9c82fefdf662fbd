"""Known answers for the MLSL losses (Eq. 1/2, Eq. 5, Eq. 6/7, released-code OHEM) on tiny arrays."""
import math

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon

from mlsl_gluon.losses import classification_bce, mlsl_loss, ohem_cross_entropy, segmentation_cross_entropy

nd = mx.nd


def two_class_logits(probs):
    """(1, 2, 1, P) logits whose softmax gives class 0 exactly the probabilities ``probs``."""
    p = np.asarray(probs, dtype=np.float64)
    logits = np.stack([np.log(p), np.log1p(-p)])[None, :, None, :]
    return nd.array(logits.astype(np.float32))


def test_cross_entropy_known_answer_and_ignore():
    # pixel 0: logits (0, ln 3) -> p(class 0) = 1/4; pixel 1 is 255 (d = 0) and must not count.
    logits = nd.array([[[[0.0, 50.0]], [[math.log(3.0), -50.0]]]])
    label = nd.array([[[0, 255]]])
    loss = segmentation_cross_entropy(nd, logits, label)
    assert loss.shape == (1,)
    np.testing.assert_allclose(loss.asnumpy(), [math.log(4.0)], rtol=1e-6)


def test_cross_entropy_normalised_per_image_by_valid_pixels():
    probs = [0.5, 0.25, 0.8, 0.1]
    logits = nd.concat(two_class_logits(probs), two_class_logits(probs), dim=0)
    label = nd.array([[[0, 0, 0, 0]], [[0, 255, 255, 255]]])
    loss = segmentation_cross_entropy(nd, logits, label).asnumpy()
    expected_first = -np.mean(np.log(probs))
    np.testing.assert_allclose(loss, [expected_first, -math.log(0.5)], rtol=1e-5)


def test_cross_entropy_without_valid_pixels_is_zero_with_zero_gradient():
    logits = nd.random.normal(shape=(2, 3, 4, 5))
    logits.attach_grad()
    label = nd.full((2, 4, 5), 255)
    with autograd.record():
        loss = segmentation_cross_entropy(nd, logits, label)
    loss.backward()
    assert np.all(loss.asnumpy() == 0.0)
    assert np.all(logits.grad.asnumpy() == 0.0)


def test_cross_entropy_ignored_pixels_get_no_gradient():
    rng = np.random.RandomState(0)
    logits = nd.array(rng.randn(1, 3, 2, 2))
    logits.attach_grad()
    label = nd.array([[[1, 255], [2, 255]]])
    with autograd.record():
        loss = segmentation_cross_entropy(nd, logits, label)
    loss.backward()
    grad = logits.grad.asnumpy()
    assert np.all(grad[0, :, :, 1] == 0.0)
    assert np.all(np.abs(grad[0, :, :, 0]).sum(axis=0) > 0)


def test_cross_entropy_matches_numpy_on_random_input():
    rng = np.random.RandomState(1)
    x = rng.randn(2, 4, 3, 5).astype(np.float32)
    y = rng.randint(0, 4, size=(2, 3, 5)).astype(np.float32)
    y[0, 0, :3] = 255
    logp = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
    expected = []
    for n in range(2):
        valid = y[n] != 255
        picked = np.take_along_axis(logp[n], np.where(valid, y[n], 0).astype(int)[None], axis=0)[0]
        expected.append(-picked[valid].mean())
    got = segmentation_cross_entropy(nd, nd.array(x), nd.array(y)).asnumpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_losses_hybridize_to_the_same_values():
    rng = np.random.RandomState(2)
    x = nd.array(rng.randn(2, 3, 6, 7))
    y = nd.array(rng.randint(0, 3, size=(2, 6, 7)))
    for fn in (segmentation_cross_entropy, lambda F, a, b: ohem_cross_entropy(F, a, b, min_kept=5)):
        block = gluon.nn.HybridLambda(fn)
        imperative = block(x, y).asnumpy()
        block.hybridize()
        np.testing.assert_allclose(block(x, y).asnumpy(), imperative, rtol=1e-6)


def test_classification_bce_known_answers():
    # x = 0 -> log 2 for either label; a confident right answer -> ~0; a confident wrong
    # answer with |x| = 1000 stays finite (= 1000) instead of log(0).
    logits = nd.array([[0.0, 0.0, 30.0, -1000.0]])
    labels = nd.array([[1.0, 0.0, 1.0, 1.0]])
    loss = classification_bce(nd, logits, labels).asnumpy()
    expected = (2 * math.log(2.0) + math.log1p(math.exp(-30.0)) + 1000.0) / 4
    np.testing.assert_allclose(loss, [expected], rtol=1e-6)
    assert np.isfinite(loss).all()


def test_classification_bce_matches_the_eq5_formula():
    rng = np.random.RandomState(3)
    x = rng.randn(3, 19).astype(np.float64)
    c = rng.randint(0, 2, size=(3, 19)).astype(np.float64)
    s = 1.0 / (1.0 + np.exp(-x))
    expected = -np.mean(c * np.log(s) + (1 - c) * np.log(1 - s), axis=1)
    got = classification_bce(nd, nd.array(x), nd.array(c)).asnumpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_mlsl_loss_eq6_and_eq7():
    assert mlsl_loss(2.0, 4.0) == pytest.approx(2.0 + 0.025 * 4.0)
    assert mlsl_loss(2.0, 4.0, lambda_cls=0.1) == pytest.approx(2.4)
    # Eq. 7: the sum over a source and a target image of their Eq. 6 losses.
    per_image = mlsl_loss(nd.array([1.0, 3.0]), nd.array([2.0, 8.0]))
    assert per_image.sum().asscalar() == pytest.approx(1.0 + 0.05 + 3.0 + 0.2)


def test_ohem_keeps_hard_pixels_and_at_least_min_kept():
    probs = [0.9, 0.8, 0.5, 0.95]
    logits = two_class_logits(probs)
    label = nd.zeros((1, 1, 4))
    # Only 0.5 is <= 0.6; min_kept = 2 raises the cut to the 2nd smallest probability (0.8).
    got = ohem_cross_entropy(nd, logits, label, thresh=0.6, min_kept=2).asscalar()
    assert got == pytest.approx(-(math.log(0.5) + math.log(0.8)) / 2, rel=1e-5)
    got = ohem_cross_entropy(nd, logits, label, thresh=0.6, min_kept=1).asscalar()
    assert got == pytest.approx(-math.log(0.5), rel=1e-5)
    # More hard pixels than min_kept: all of them are kept.
    got = ohem_cross_entropy(nd, logits, label, thresh=0.92, min_kept=1).asscalar()
    assert got == pytest.approx(-(math.log(0.9) + math.log(0.8) + math.log(0.5)) / 3, rel=1e-5)


def test_ohem_ignores_unlabelled_pixels_and_handles_few_or_none():
    logits = two_class_logits([0.9, 0.1, 0.8, 0.95])
    label = nd.array([[[0, 255, 0, 255]]])
    # Fewer valid pixels (2) than min_kept: every valid pixel is kept, the ignored 0.1 never.
    got = ohem_cross_entropy(nd, logits, label, thresh=0.6, min_kept=256).asscalar()
    assert got == pytest.approx(-(math.log(0.9) + math.log(0.8)) / 2, rel=1e-5)
    none_valid = ohem_cross_entropy(nd, logits, nd.full((1, 1, 4), 255)).asscalar()
    assert none_valid == 0.0


def test_ohem_rejects_bad_min_kept():
    with pytest.raises(ValueError, match="min_kept"):
        ohem_cross_entropy(nd, two_class_logits([0.5]), nd.zeros((1, 1, 1)), min_kept=0)

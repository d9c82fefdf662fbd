"""Known answers for the MLSL losses (Eq. 1/2, Eq. 5, Eq. 6/7, released-code OHEM) on tiny arrays,
the released normalisation against MXNet's own output operators, and one SGD step on 1 and 2
devices against its hand-derived update."""
import math

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon

from mlsl_gluon.config import LossSettings
from mlsl_gluon.losses import (
    SEG_NORMALIZATIONS,
    classification_bce,
    mlsl_loss,
    ohem_cross_entropy,
    segmentation_cross_entropy,
)
from mlsl_gluon.training import build_trainer, train_epoch

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


def test_cross_entropy_normalised_per_image_or_over_the_batch():
    probs = [0.5, 0.25, 0.8, 0.1]
    logits = nd.concat(two_class_logits(probs), two_class_logits(probs), dim=0)
    label = nd.array([[[0, 0, 0, 0]], [[0, 255, 255, 255]]])
    loss = segmentation_cross_entropy(nd, logits, label, normalization="per_image").asnumpy()
    expected_first = -np.mean(np.log(probs))
    np.testing.assert_allclose(loss, [expected_first, -math.log(0.5)], rtol=1e-5)
    # Released: 5 valid pixels in the batch; each image's value is its sum over them / 5.
    shares = segmentation_cross_entropy(nd, logits, label).asnumpy()
    np.testing.assert_allclose(shares, [-np.sum(np.log(probs)) / 5, -math.log(0.5) / 5], rtol=1e-5)
    with pytest.raises(ValueError, match="normalization"):
        segmentation_cross_entropy(nd, logits, label, normalization="mean")


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
    expected, sums = [], []
    for n in range(2):
        valid = y[n] != 255
        picked = np.take_along_axis(logp[n], np.where(valid, y[n], 0).astype(int)[None], axis=0)[0]
        expected.append(-picked[valid].mean())
        sums.append(-picked[valid].sum())
    got = segmentation_cross_entropy(nd, nd.array(x), nd.array(y), normalization="per_image").asnumpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    got = segmentation_cross_entropy(nd, nd.array(x), nd.array(y)).asnumpy()
    np.testing.assert_allclose(got, np.array(sums) / (y != 255).sum(), rtol=1e-5)


def test_losses_hybridize_to_the_same_values():
    rng = np.random.RandomState(2)
    x = nd.array(rng.randn(2, 3, 6, 7))
    y = nd.array(rng.randint(0, 3, size=(2, 6, 7)))
    for norm in SEG_NORMALIZATIONS:
        for fn in (lambda F, a, b, n=norm: segmentation_cross_entropy(F, a, b, normalization=n),
                   lambda F, a, b, n=norm: ohem_cross_entropy(F, a, b, min_kept=5, normalization=n)):
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


def test_ohem_selects_over_the_whole_batch_or_per_image():
    # Image 0 is easy (0.9, 0.95, 0.85), image 1 hard (0.3, 0.5, 0.7); thresh 0.6, min_kept 4.
    probs = np.array([[0.9, 0.95, 0.85], [0.3, 0.5, 0.7]])
    logits = nd.concat(two_class_logits(probs[0]), two_class_logits(probs[1]), dim=0)
    label = nd.zeros((2, 1, 3))
    # Released pool = the batch: sorted 0.3 0.5 0.7 0.85 | 0.9 0.95 -> cut at 0.85, 4 pixels kept.
    kept = np.sort(probs.ravel())[:4]
    batch = ohem_cross_entropy(nd, logits, label, thresh=0.6, min_kept=4).asnumpy()
    np.testing.assert_allclose(batch.sum(), -np.log(kept).mean(), rtol=1e-5)
    np.testing.assert_allclose(batch, [-np.log(0.85) / 4, -np.log(probs[1]).sum() / 4], rtol=1e-5)
    # Per image: 3 valid pixels < min_kept, so each image keeps all of its own.
    own = ohem_cross_entropy(nd, logits, label, thresh=0.6, min_kept=4, normalization="per_image")
    np.testing.assert_allclose(own.asnumpy(), -np.log(probs).mean(axis=1), rtol=1e-5)


def _mxnet_output_gradients(seg_logits, label8, cls_logits, weak):
    """Input gradients of the released heads' MXNet operators, run in a Module."""
    seg = mx.sym.SoftmaxOutput(mx.sym.var("seg"), mx.sym.var("softmax_label"), multi_output=True,
                               use_ignore=True, ignore_label=255, normalization="valid", name="softmax")
    cls = mx.sym.LogisticRegressionOutput(mx.sym.var("cls"), mx.sym.var("sigmoid_label"),
                                          grad_scale=0.04, name="sigmoid")
    module = mx.mod.Module(mx.sym.Group([seg, cls]), data_names=["seg", "cls"],
                           label_names=["softmax_label", "sigmoid_label"], context=mx.cpu())
    module.bind(data_shapes=[("seg", seg_logits.shape), ("cls", cls_logits.shape)],
                label_shapes=[("softmax_label", label8.shape), ("sigmoid_label", weak.shape)],
                inputs_need_grad=True)
    module.init_params()
    batch = mx.io.DataBatch([nd.array(seg_logits), nd.array(cls_logits)], [nd.array(label8), nd.array(weak)])
    module.forward(batch, is_train=True)
    module.backward()
    return [g.asnumpy() for g in module.get_input_grads()]


def _our_gradients(seg_logits, label8, cls_logits, weak, ohem=False):
    seg, cls = nd.array(seg_logits), nd.array(cls_logits)
    seg.attach_grad()
    cls.attach_grad()
    with autograd.record():
        if ohem:  # thresh 1 with min_kept 1 keeps every valid pixel: must equal the plain loss
            seg_loss = ohem_cross_entropy(nd, seg, nd.array(label8), thresh=1.0, min_kept=1)
        else:
            seg_loss = segmentation_cross_entropy(nd, seg, nd.array(label8))
        loss = mlsl_loss(seg_loss, classification_bce(nd, cls, nd.array(weak)), lambda_cls=0.04).sum()
    loss.backward()
    return seg.grad.asnumpy(), cls.grad.asnumpy()


@pytest.mark.parametrize("batch", [1, 2, 3])
@pytest.mark.parametrize("ohem", [False, True])
def test_released_loss_gradients_equal_mxnet_output_operators(batch, ohem):
    rng = np.random.RandomState(10 + batch)
    C, h, w = 5, 3, 4
    seg_logits = rng.randn(batch, C, h, w).astype(np.float32) * 2
    label8 = rng.randint(0, C, size=(batch, h, w)).astype(np.float32)
    label8[0, 0, :3] = 255  # unequal valid-pixel counts: 9 in image 0, 12 in image 1
    if batch == 3:
        label8[2] = 255  # an image without any valid pixel
    cls_logits = rng.randn(batch, C).astype(np.float32) * 3
    weak = rng.randint(0, 2, size=(batch, C)).astype(np.float32)
    ref_seg, ref_cls = _mxnet_output_gradients(seg_logits, label8, cls_logits, weak)
    got_seg, got_cls = _our_gradients(seg_logits, label8, cls_logits, weak, ohem)
    assert np.abs(ref_seg).max() > 1e-3 and np.abs(ref_cls).max() > 1e-3
    np.testing.assert_allclose(got_seg, ref_seg, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got_cls, ref_cls, rtol=1e-5, atol=1e-8)
    if batch == 3:
        assert not got_seg[2].any()


class _Linear(gluon.HybridBlock):
    """Per-pixel linear seg logits at stride 8 and image logits: no dropout, so two devices see
    the same function as one."""

    def __init__(self, num_classes, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.seg = gluon.nn.Conv2D(num_classes, 8, strides=8, in_channels=3)
            self.cls = gluon.nn.Dense(num_classes, in_units=3)

    def hybrid_forward(self, F, x):
        return self.seg(x), self.cls(F.mean(x, axis=(2, 3)))


def _hand_gradients(net, images, label8, weak, devices):
    """d/dtheta of the mean over devices of [CE over the device batch's valid pixels
    + 0.04 * sum over its images of the mean BCE], written out with plain ops."""
    split = np.array_split(np.arange(len(images)), devices)
    with autograd.record():
        total = 0
        for part in split:
            seg, cls = net(nd.array(images[part]))
            y = nd.array(label8[part])
            valid = y != 255
            nll = -nd.pick(nd.log_softmax(seg, axis=1), y, axis=1, mode="clip")
            ce = (nll * valid).sum() / valid.sum()
            z, c = cls, nd.array(weak[part])
            bce = (nd.relu(z) - z * c + nd.log(1 + nd.exp(-nd.abs(z)))).mean(axis=1)
            total = total + ce + 0.04 * bce.sum()
        total = total / devices
    total.backward()
    return {name: p.grad().asnumpy().copy() for name, p in net.collect_params().items()}


@pytest.mark.parametrize("devices", [1, 2])
def test_released_training_step_averages_device_batches(devices):
    C, lr = 4, 0.1
    rng = np.random.RandomState(4)
    images = rng.randn(2, 3, 16, 24).astype(np.float32)
    label8 = rng.randint(0, C, size=(2, 2, 3)).astype(np.float32)
    label8[0, 0] = 255  # 3 valid pixels in image 0, 6 in image 1
    weak = rng.randint(0, 2, size=(2, C)).astype(np.float32)
    ctx = [mx.cpu(i) for i in range(devices)]
    net = _Linear(C)
    net.initialize(mx.init.Normal(0.3), ctx=ctx)
    before = {name: p.data(ctx[0]).asnumpy().copy() for name, p in net.collect_params().items()}
    expected = _hand_gradients(net, images, label8, weak, devices)
    trainer = build_trainer(net, ctx, lr=lr, momentum=0.0, wd=0.0)
    train_epoch(net, trainer, [(images, label8, weak)], ctx, loss=LossSettings(use_cls=True, lambda_cls=0.04),
                progress=False)
    for name, p in net.collect_params().items():
        mult = 2.0 if name.endswith("_bias") else 1.0
        want = before[name] - lr * mult * expected[name]
        for c in ctx:
            np.testing.assert_allclose(p.data(c).asnumpy(), want, rtol=1e-5, atol=1e-6, err_msg=name)
    assert any(np.abs(before[n] - p.data().asnumpy()).max() > 1e-3 for n, p in net.collect_params().items())

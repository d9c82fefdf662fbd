"""ResNet-38 / MLSLNet: shapes, gradients, frozen BN, hybridization, exact parameter counts."""
import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd

from mlsl_gluon.model import BN_EPS, MLSLNet, ResNet38, init_params, scaled_channels
from mlsl_gluon.model.full_resolution import bicubic_resize_matrix

WIDTH = 1 / 16  # 4 .. 256 channels: the whole file runs in seconds on CPU


def _net(**kwargs):
    kwargs.setdefault("width", WIDTH)
    net = MLSLNet(**kwargs)
    init_params(net, ctx=mx.cpu(0))
    return net


def _trainable(net):
    return {k: p for k, p in net._collect_params_with_prefix().items() if p.grad_req != "null"}


def _running_stats(net):
    return {k: p.data().asnumpy().copy() for k, p in net._collect_params_with_prefix().items()
            if k.endswith(("running_mean", "running_var"))}


def _count(params):
    return int(sum(np.prod(p.shape) for p in params))


@pytest.mark.parametrize("with_classifier", [True, False])
def test_output_shapes_at_odd_non_square_size(with_classifier):
    net = _net(num_classes=19, with_classifier=with_classifier)
    x = mx.nd.random.normal(shape=(2, 3, 97, 131))
    out = net(x)
    seg = out[0] if with_classifier else out
    assert seg.shape == (2, 19, 13, 17)  # ceil(97/8), ceil(131/8)
    if with_classifier:
        assert out[1].shape == (2, 19)
    else:
        assert isinstance(out, mx.nd.NDArray)
    prob = net.predict(x).asnumpy()
    assert prob.shape == (2, 19, 97, 131)
    np.testing.assert_allclose(prob.sum(axis=1), 1.0, rtol=1e-5)
    # The bicubic filter overshoots [0, 1] by at most its 2D kernel's negative weight mass.
    abs_sum = [np.abs(bicubic_resize_matrix(n, 8 * n)).sum(axis=1).max() for n in (13, 17)]
    overshoot = (abs_sum[0] * abs_sum[1] - 1) / 2
    assert -overshoot <= prob.min() < 0 < prob.max() <= 1 + overshoot


def test_trunk_stride_and_width():
    trunk = ResNet38(width=0.125)
    init_params(trunk)
    feat = trunk(mx.nd.zeros((1, 3, 33, 40)))
    assert feat.shape == (1, 512, 5, 5)  # 4096 / 8 channels at stride 8
    assert trunk.out_channels == 512
    assert scaled_channels(64, 1e-4) == 1 and scaled_channels(100, 0.333) == 33
    tiny = MLSLNet(num_classes=3, width=1e-4)  # every hidden width clamps to 1 channel
    init_params(tiny)
    seg, cls = tiny(mx.nd.zeros((1, 3, 16, 24)))
    assert seg.shape == (1, 3, 2, 3) and cls.shape == (1, 3)


def test_architecture_follows_the_spec_table():
    trunk = ResNet38()
    layers = dict(trunk.ademxapp_layers())
    bn = layers["bn2a_branch2a"]
    assert bn._kwargs["eps"] == pytest.approx(BN_EPS) and bn._kwargs["use_global_stats"]
    conv5a2 = layers["res5a_branch2b1"]._kwargs
    assert conv5a2["dilate"] == (2, 2) and conv5a2["stride"] == (1, 1)
    assert layers["res5a_branch2a"]._kwargs["dilate"] == (1, 1)
    assert layers["res5b2_branch2a"]._kwargs["dilate"] == (2, 2)
    assert layers["res4a_branch2a"]._kwargs["stride"] == (2, 2)
    assert layers["res6a_branch2b1"]._kwargs["dilate"] == (4, 4)
    assert layers["res6a_branch2a"]._kwargs["kernel"] == (1, 1)
    assert layers["res7a_branch2b2"].weight.shape == (4096, 2048, 1, 1)
    assert layers["res7a_branch1"].weight.shape == (4096, 2048, 1, 1)
    assert not any(conv._kwargs.get("no_bias") is False for name, conv in layers.items()
                   if name.startswith("res"))
    assert [u._dropout for u in trunk._units][-2:] == [0.3, 0.5]
    assert "res4b5_branch2b1" in layers and "res4b6_branch2a" not in layers
    assert "res2b1_branch1" not in layers  # identity shortcut


def test_parameter_counts_at_full_width_are_exact():
    counts = {}
    for num_classes, with_cls in ((19, False), (16, False), (19, True)):
        net = MLSLNet(num_classes=num_classes, width=1.0, with_classifier=with_cls)
        params = net.collect_params().values()
        counts[num_classes, with_cls] = _count(p for p in params if p.grad_req != "null")
        assert _count(p for p in params if p.grad_req == "null") == 47744  # BN running stats
        if with_cls:
            assert _count(net.cls_branch.collect_params().values()) == 47200275
        # Symbolic shape inference with a small input checks that every declared parameter
        # shape is consistent with the graph, without allocating the 171M parameters.
        outs = net(mx.sym.var("data"))
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        arg_shapes, out_shapes, _ = mx.sym.Group(outs).infer_shape(data=(1, 3, 24, 17))
        assert out_shapes[0] == (1, num_classes, 3, 3)
        assert all(s is not None for s in arg_shapes)
    assert counts[19, False] == 124033363
    assert counts[16, False] == 124019536
    assert counts[19, True] == 124033363 + 47200275


@pytest.mark.parametrize("cls_head", ["paper", "released"])
def test_backward_gives_every_trainable_parameter_a_finite_nonzero_gradient(cls_head):
    net = _net(num_classes=5, cls_head=cls_head)
    x = mx.nd.random.normal(shape=(2, 3, 41, 35))
    with autograd.record():
        seg, cls = net(x)
        loss = ((seg * mx.nd.random.normal(shape=seg.shape)).sum()
                + (cls * mx.nd.random.normal(shape=cls.shape)).sum())
    loss.backward()
    trainable = _trainable(net)
    # everything but the running mean/var of the 37 BN layers (2 per unit of levels 2-5,
    # 3 per unit of levels 6-7, bn7)
    assert len(trainable) == len(net.collect_params().keys()) - 2 * 37
    for name, param in trainable.items():
        grad = param.grad().asnumpy()
        assert np.isfinite(grad).all(), name
        assert np.abs(grad).max() > 0, name


@pytest.mark.parametrize("freeze_bn", [True, False])
def test_bn_running_stats_frozen_or_updating(freeze_bn):
    net = _net(num_classes=4, freeze_bn=freeze_bn)
    before = _running_stats(net)
    gamma_before = net.trunk.bn7.gamma.data().asnumpy().copy()
    trainer = mx.gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1, "momentum": 0.9})
    x = mx.nd.random.normal(shape=(2, 3, 32, 32))
    with autograd.record():
        seg, cls = net(x)
        loss = seg.sum() + cls.sum()
    loss.backward()
    trainer.step(2)
    mx.nd.waitall()
    after = _running_stats(net)
    changed = [k for k in before if not np.array_equal(before[k], after[k])]
    assert not np.array_equal(net.trunk.bn7.gamma.data().asnumpy(), gamma_before)  # gamma trains
    if freeze_bn:
        assert changed == []
    else:
        assert len(changed) == len(before)


def test_cls_head_variants_differ_only_in_the_classifier():
    paper, released = _net(num_classes=6, cls_head="paper"), _net(num_classes=6, cls_head="released")
    for p, q in zip(paper._collect_params_with_prefix().values(),
                    released._collect_params_with_prefix().values()):
        q.set_data(p.data())
    x = mx.nd.random.normal(shape=(1, 3, 40, 48))
    (seg_p, cls_p), (seg_r, cls_r) = paper(x), released(x)
    np.testing.assert_array_equal(seg_p.asnumpy(), seg_r.asnumpy())
    assert not np.allclose(cls_p.asnumpy(), cls_r.asnumpy())
    with pytest.raises(ValueError, match="cls_head"):
        MLSLNet(cls_head="relu")


def test_hybridized_equals_imperative_on_two_devices():
    ctxs = [mx.cpu(0), mx.cpu(1)]
    net = MLSLNet(num_classes=7, width=WIDTH)
    init_params(net, ctx=ctxs)
    x = mx.nd.random.normal(shape=(1, 3, 57, 43), ctx=mx.cpu(1))
    seg_i, cls_i = net(x)
    prob_i = net.predict(x)
    net.hybridize()
    seg_h, cls_h = net(x)
    prob_h = net.predict(x)
    assert seg_h.context == mx.cpu(1) and prob_h.context == mx.cpu(1)
    np.testing.assert_allclose(seg_h.asnumpy(), seg_i.asnumpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(cls_h.asnumpy(), cls_i.asnumpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(prob_h.asnumpy(), prob_i.asnumpy(), rtol=1e-5, atol=1e-6)


def test_predict_is_inference_mode_and_runs_no_classification_branch():
    net = _net(num_classes=3, with_classifier=True)
    calls = []
    net.cls_branch.register_forward_hook(lambda block, inputs, output: calls.append(1))
    x = mx.nd.random.normal(shape=(1, 3, 50, 66))
    reference = net.predict(x, flip=True).asnumpy()
    with autograd.record(train_mode=True):  # dropout must stay off inside predict
        prob = net.predict(x, flip=True)
    np.testing.assert_array_equal(prob.asnumpy(), reference)
    assert calls == []
    # segment() gives the segmentation output of the full forward pass
    padded = mx.nd.pad(x, mode="constant", pad_width=(0, 0, 0, 0, 0, 6, 0, 6))
    seg, _ = net(padded)
    assert calls == [1]
    np.testing.assert_array_equal(net.segment(padded).asnumpy(), seg.asnumpy())
    net.hybridize()
    np.testing.assert_allclose(net.predict(x, flip=True).asnumpy(), reference, rtol=1e-5, atol=1e-6)
    assert calls == [1]


def test_classification_branch_initialisation_released_or_normal():
    released = _net(num_classes=19, width=0.125)
    small = _net(num_classes=19, width=0.125, cls_init="normal")
    fan_in = released.cls_branch.fc2.weight.shape[1]
    # released: MSRA on every new layer, std sqrt(2 / fan_in) (64 units here: 0.177)
    msra_std = np.sqrt(2 / fan_in)
    assert released.cls_branch.fc2.weight.data().asnumpy().std() == pytest.approx(msra_std, rel=0.1)
    assert small.cls_branch.fc2.weight.data().asnumpy().std() == pytest.approx(0.01, rel=0.1)
    for net in (released, small):
        assert not net.cls_branch.fc2.bias.data().asnumpy().any()
    with pytest.raises(ValueError, match="cls_init"):
        MLSLNet(cls_init="xavier")

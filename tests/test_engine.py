"""Training engine: parameter groups, the SGD update, Eq. 6 weighting, NaN guard, determinism,
two CPU contexts == one, and atomic checkpoints (round trip, corruption, crash during save)."""
import logging
import math
import os

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon
from mxnet.gluon import nn

from mlsl_gluon.config import LossSettings
from mlsl_gluon.losses import classification_bce, ohem_cross_entropy, segmentation_cross_entropy
from mlsl_gluon.model import MLSLNet, init_params
from mlsl_gluon.training import (
    CheckpointError,
    NonFiniteLossError,
    build_trainer,
    load_checkpoint,
    num_workers,
    round_learning_rate,
    save_checkpoint,
    set_learning_rate,
    train_epoch,
)
from mlsl_gluon.training.engine import is_double_lr_parameter

C = 5
SIZE = 32  # crop; labels at stride 8 are 4 x 4

# Eq. 7: segmentation + lambda_cls x classification loss.
PWL = LossSettings(use_cls=True)
PWL_PAPER = LossSettings(use_cls=True, lambda_cls=0.025, normalization="per_image")


class NoDropoutNet(gluon.HybridBlock):
    """Stand-in with frozen BN, biases and a classifier but no dropout.

    Two devices draw different dropout masks than one device for the same batch, so the
    device-split equivalence is checked on a network without dropout.
    """

    def __init__(self, num_classes=C, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.bn = nn.BatchNorm(use_global_stats=True)
            self.conv1 = nn.Conv2D(16, 3, strides=2, padding=1)
            self.conv2 = nn.Conv2D(16, 3, strides=4, padding=1)
            self.conv3 = nn.Conv2D(num_classes, 1)
            self.fc = nn.Dense(num_classes)

    def hybrid_forward(self, F, x):
        seg = self.conv3(F.relu(self.conv2(F.relu(self.conv1(self.bn(x))))))
        return seg, self.fc(F.mean(seg, axis=(2, 3)))


def make_batches(num, batch_size, seed=0, num_classes=C, size=SIZE):
    rng = np.random.RandomState(seed)
    out = []
    for _ in range(num):
        images = rng.randn(batch_size, 3, size, size).astype(np.float32)
        label8 = rng.randint(0, num_classes, size=(batch_size, size // 8, size // 8)).astype(np.float32)
        label8[:, 0, :2] = 255
        weak = rng.randint(0, 2, size=(batch_size, num_classes)).astype(np.float32)
        out.append((images, label8, weak))
    return out


def mlsl_net(ctx, with_classifier=True, seed=0):
    mx.random.seed(seed)
    net = MLSLNet(num_classes=C, width=1 / 16, with_classifier=with_classifier)
    init_params(net, ctx=ctx)
    return net


def stand_in(ctx, seed=0):
    mx.random.seed(seed)
    net = NoDropoutNet()
    net.initialize(mx.init.Xavier(), ctx=ctx)
    net(mx.nd.zeros((1, 3, SIZE, SIZE), ctx=ctx[0]))
    # Non-trivial BN statistics, so freezing them is observable.
    net.bn.running_mean.set_data(mx.nd.array([0.1, -0.2, 0.3]))
    net.bn.running_var.set_data(mx.nd.array([1.5, 0.7, 1.1]))
    return net


def short(name):
    """Parameter name without the per-instance prefix (``mlslnet3_``), comparable across nets."""
    return name.split("_", 1)[1]


def params_numpy(net):
    return {short(name): p.data(p.list_ctx()[0]).asnumpy().copy() for name, p in net.collect_params().items()}


def assert_params_close(a, b, rtol=1e-5, atol=1e-7):
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=rtol, atol=atol, err_msg=name)


def test_round_learning_rate_divides_by_sqrt2_per_round():
    assert round_learning_rate(1e-4, 0) == 1e-4
    assert round_learning_rate(1e-4, 2) == pytest.approx(0.5e-4)
    assert round_learning_rate(1e-4, 5) == pytest.approx(1e-4 / 2 ** 2.5)
    with pytest.raises(ValueError):
        round_learning_rate(1e-4, -1)


# The parameters of MLSLNet(num_classes=5) that train at lr x2 without weight decay, written out
# from the architecture (ResNet-38 in ademxapp's names, SPEC section 5): the beta of every BN
# (two per residual block, three in res6a/res7a, and bn7) and the biases of the DeepLab head
# and of the PWL classifier. Everything else trainable (49 conv/dense weights, 37 BN gammas)
# trains at lr x1 with weight decay.
_TWO_BN_BLOCKS = ("res2a", "res2b1", "res2b2", "res3a", "res3b1", "res3b2", "res4a", "res4b1", "res4b2",
                  "res4b3", "res4b4", "res4b5", "res5a", "res5b1", "res5b2")
MLSLNET_DOUBLE_LR = (
    [f"trunk_{block}_bn_branch{branch}_beta" for block in _TWO_BN_BLOCKS for branch in ("2a", "2b1")]
    + [f"trunk_{block}_bn_branch{branch}_beta"
       for block in ("res6a", "res7a") for branch in ("2a", "2b1", "2b2")]
    + ["trunk_bn7_beta", "seg_conv6a_bias", "seg_linear5_bias",
       "cls_conv1_bias", "cls_conv2_bias", "cls_fc1_bias", "cls_fc2_bias"]
)
#: The same for NoDropoutNet: its BN's beta, three conv biases and the dense bias.
STAND_IN_DOUBLE_LR = {"batchnorm0_beta", "conv0_bias", "conv1_bias", "conv2_bias", "dense0_bias"}


def test_parameter_groups_on_mlslnet():
    ctx = [mx.cpu()]
    net = mlsl_net(ctx)
    trainer = build_trainer(net, ctx, lr=1e-3)
    names = [short(p.name) for p in trainer._params]
    assert not any("running_" in n for n in names), "BN running statistics must not be trained"
    assert len(MLSLNET_DOUBLE_LR) == 43 and set(MLSLNET_DOUBLE_LR) <= set(names)
    assert len(names) == 43 + 49 + 37
    for index, param in enumerate(trainer._params):
        double = short(param.name) in MLSLNET_DOUBLE_LR
        assert is_double_lr_parameter(param.name) == double, param.name
        assert param.lr_mult == (2.0 if double else 1.0), param.name
        assert param.wd_mult == (0.0 if double else 1.0), param.name
        # The same multipliers by index, which survive pickling to a parameter server.
        assert trainer._optimizer.lr_mult[index] == param.lr_mult
        assert trainer._optimizer.wd_mult[index] == param.wd_mult
    assert num_workers(trainer) == 1
    set_learning_rate(trainer, 5e-4)
    assert trainer.learning_rate == 5e-4


def test_sgd_step_on_mlslnet_applies_double_lr_and_no_wd_to_the_listed_parameters():
    """One plain SGD step (no momentum) on a known gradient: w - lr * m * (g + d * wd * w), with
    (m, d) = (2, 0) for the listed parameters and (1, 1) for every other one."""
    ctx = [mx.cpu()]
    net = mlsl_net(ctx)
    lr, wd = 0.01, 0.1
    trainer = build_trainer(net, ctx, lr=lr, momentum=0.0, wd=wd)
    rng = np.random.RandomState(3)
    grads = {p.name: rng.randn(*p.shape).astype(np.float32) for p in trainer._params}
    before = {p.name: p.data().asnumpy().copy() for p in trainer._params}
    with autograd.record():
        # d/dw sum(w * g) = g: backward leaves exactly the chosen gradient on every parameter.
        loss = mx.nd.add_n(*[(p.data() * mx.nd.array(grads[p.name])).sum() for p in trainer._params])
    loss.backward()
    trainer.step(1)
    for param in trainer._params:
        double = short(param.name) in MLSLNET_DOUBLE_LR
        mult, decay = (2.0, 0.0) if double else (1.0, wd)
        w = before[param.name]
        expected = w - lr * mult * (grads[param.name] + decay * w)
        np.testing.assert_allclose(param.data().asnumpy(), expected, rtol=1e-5, atol=1e-7, err_msg=param.name)


def test_first_update_follows_sgd_with_lr_and_wd_groups():
    ctx = [mx.cpu()]
    net = stand_in(ctx)
    lr, wd = 0.05, 0.01
    trainer = build_trainer(net, ctx, lr=lr, wd=wd)
    (images, label8, weak), = make_batches(1, 3)
    before = params_numpy(net)
    # Reference gradient of the batch-mean Eq. 6 loss, computed independently.
    with autograd.record():
        seg, cls = net(mx.nd.array(images))
        loss = (segmentation_cross_entropy(mx.nd, seg, mx.nd.array(label8), normalization="per_image")
                + 0.025 * classification_bce(mx.nd, cls, mx.nd.array(weak))).mean()
    loss.backward()
    grads = {short(n): p.grad().asnumpy().copy()
             for n, p in net.collect_params().items() if p.grad_req != "null"}
    stats = train_epoch(net, trainer, [(images, label8, weak)], ctx, loss=PWL_PAPER, progress=False)
    assert stats["total"] == pytest.approx(loss.asscalar(), rel=1e-5)
    after = params_numpy(net)
    assert STAND_IN_DOUBLE_LR <= grads.keys()
    for name, grad in grads.items():
        double = name in STAND_IN_DOUBLE_LR
        step = lr * (2.0 if double else 1.0) * (grad + (0.0 if double else wd) * before[name])
        np.testing.assert_allclose(after[name], before[name] - step, rtol=1e-4, atol=1e-7, err_msg=name)
    for frozen in (net.bn.running_mean, net.bn.running_var):
        np.testing.assert_array_equal(after[short(frozen.name)], before[short(frozen.name)])


def test_eq6_weighting_and_released_cls_scale():
    ctx = [mx.cpu()]
    batches = make_batches(2, 2)
    net = stand_in(ctx)
    stats = train_epoch(net, build_trainer(net, ctx, lr=0.0), batches, ctx, loss=PWL_PAPER, progress=False)
    assert stats["total"] == pytest.approx(stats["seg"] + 0.025 * stats["cls"], rel=1e-6)
    assert stats["iterations"] == 2 and stats["images"] == 4
    stats = train_epoch(net, build_trainer(net, ctx, lr=0.0), batches, ctx,
                        loss=LossSettings(use_cls=True, cls_loss_scale=0.04, normalization="per_image"),
                        progress=False)
    assert stats["total"] == pytest.approx(stats["seg"] + 0.04 * stats["cls"], rel=1e-6)
    plain = train_epoch(net, build_trainer(net, ctx, lr=0.0), batches, ctx, progress=False,
                        loss=LossSettings(normalization="per_image"))
    assert set(plain) >= {"seg", "total"} and "cls" not in plain
    assert plain["total"] == pytest.approx(stats["seg"], rel=1e-6)


def test_ohem_option_and_log_lines(caplog):
    ctx = [mx.cpu()]
    net = stand_in(ctx)
    # Confident predictions (some labelled-class probabilities above 0.6) and 17 x 17 = 289
    # labelled pixels per image (more than min_kept = 256), so OHEM differs from Eq. 2.
    net.conv3.weight.set_data(net.conv3.weight.data() * 30)
    batches = make_batches(1, 2, seed=11, size=8 * 17)
    seg_logits, _ = net(mx.nd.array(batches[0][0]))
    label8 = mx.nd.array(batches[0][1])
    expected = ohem_cross_entropy(mx.nd, seg_logits, label8).sum().asscalar()  # one device
    assert expected != pytest.approx(segmentation_cross_entropy(mx.nd, seg_logits, label8).sum().asscalar())
    with caplog.at_level(logging.INFO, logger="mlsl_gluon.training.engine"):
        stats = train_epoch(net, build_trainer(net, ctx, lr=0.0), batches[:1] * 2, ctx,
                            loss=LossSettings(ohem=True),
                            log_every=1, start_iteration=4, progress=False)
    assert stats["seg"] == pytest.approx(expected, rel=1e-5)
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["iteration 4", "iteration 5"]


def test_unused_classifier_is_not_updated_and_use_cls_needs_weak_labels():
    ctx = [mx.cpu()]
    net = mlsl_net(ctx)
    before = params_numpy(net)
    train_epoch(net, build_trainer(net, ctx, lr=0.1), make_batches(1, 2), ctx, progress=False)
    after = params_numpy(net)
    cls_names = [n for n in before if n.startswith("cls_")]
    assert cls_names
    for name in cls_names:
        np.testing.assert_array_equal(after[name], before[name])
    seg_weight = next(n for n in before if n.endswith("seg_conv6a_weight"))
    assert not np.array_equal(after[seg_weight], before[seg_weight])
    images, label8, _ = make_batches(1, 2)[0]
    with pytest.raises(ValueError, match="weak labels"):
        train_epoch(net, build_trainer(net, ctx, lr=0.1), [(images, label8, None)], ctx,
                    loss=PWL, progress=False)


def test_non_finite_loss_raises_before_the_update():
    ctx = [mx.cpu()]
    net = stand_in(ctx)
    trainer = build_trainer(net, ctx, lr=0.1)
    batches = make_batches(3, 2)
    batches[1][0][0, 0, 0, 0] = np.nan
    seen = []
    with pytest.raises(NonFiniteLossError, match="global iteration 11") as info:
        train_epoch(net, trainer, batches, ctx, loss=PWL, start_iteration=10, progress=False,
                    on_iteration=lambda it, losses: seen.append((it, params_numpy(net))))
    assert info.value.iteration == 11 and info.value.loss_name == "seg"
    assert [it for it, _ in seen] == [10]
    assert_params_close(params_numpy(net), seen[0][1], rtol=0, atol=0)


def run_epochs(net, ctx, batches, *, kvstore="device", epochs=1, hybridize=False, seed=None,
               normalization="valid_pixels_per_device_batch"):
    if hybridize:
        net.hybridize()
    # Inference first, as in a round (pseudo-labels): oneDNN may then hold weights in its layout.
    with autograd.predict_mode():
        net(mx.nd.array(batches[0][0][:1], ctx=ctx[0]))[0].wait_to_read()
    trainer = build_trainer(net, ctx, lr=0.01, kvstore=kvstore)
    for _ in range(epochs):
        train_epoch(net, trainer, batches, ctx, loss=LossSettings(use_cls=True, normalization=normalization),
                    progress=False, seed=seed)
    return params_numpy(net)


def test_two_cpu_contexts_give_the_same_update_as_one():
    # Even, uneven (3 = 2 + 1) and too-small (1 image for 2 devices) global batches.
    batches = make_batches(2, 4, seed=5) + make_batches(1, 3, seed=6) + make_batches(1, 1, seed=8)
    # Per-image averaging (the paper's) does not depend on the split; the released per-device
    # averaging does by design (tests/test_losses.py checks it against its definition).
    one = run_epochs(stand_in([mx.cpu(0)]), [mx.cpu(0)], batches, normalization="per_image")
    two_ctx = [mx.cpu(0), mx.cpu(1)]
    two = run_epochs(stand_in(two_ctx), two_ctx, batches, normalization="per_image")
    initial = params_numpy(stand_in([mx.cpu(0)]))
    assert any(not np.allclose(one[n], initial[n]) for n in one), "training must move the parameters"
    assert_params_close(two, one, rtol=1e-5, atol=1e-6)


def test_mlslnet_training_is_deterministic_and_hybridizable():
    ctx = [mx.cpu()]
    batches = make_batches(2, 2, seed=7)
    first = run_epochs(mlsl_net(ctx), ctx, batches, seed=3)
    again = run_epochs(mlsl_net(ctx), ctx, batches, seed=3)
    assert_params_close(again, first, rtol=0, atol=0)
    hybrid = run_epochs(mlsl_net(ctx), ctx, batches, seed=3, hybridize=True)
    assert_params_close(hybrid, first, rtol=1e-4, atol=1e-6)
    for name, value in hybrid.items():
        assert np.isfinite(value).all(), name


def test_checkpoint_round_trip_gives_identical_next_update(tmp_path):
    ctx = [mx.cpu()]
    batches = make_batches(4, 2, seed=9)
    reference = mlsl_net(ctx)
    ref_trainer = build_trainer(reference, ctx, lr=0.01)
    train_epoch(reference, ref_trainer, batches, ctx, loss=PWL, progress=False, seed=1)

    net = mlsl_net(ctx)
    trainer = build_trainer(net, ctx, lr=0.01)
    train_epoch(net, trainer, batches[:2], ctx, loss=PWL, progress=False, seed=1)
    path = tmp_path / "round0.ckpt"
    state = {"round": 0, "iteration": 2, "rng": [1, 2, 3]}
    save_checkpoint(path, net, trainer, state)
    assert os.listdir(tmp_path) == ["round0.ckpt"], "no temporary files may remain"

    resumed = mlsl_net(ctx, seed=123)  # different initial values, overwritten by the load
    resumed_trainer = build_trainer(resumed, ctx, lr=0.5)
    assert load_checkpoint(path, resumed, resumed_trainer) == state
    assert_params_close(params_numpy(resumed), params_numpy(net), rtol=0, atol=0)
    assert resumed_trainer.learning_rate == pytest.approx(0.01)
    train_epoch(resumed, resumed_trainer, batches[2:], ctx, loss=PWL, start_iteration=2,
                progress=False, seed=1)
    assert_params_close(params_numpy(resumed), params_numpy(reference), rtol=1e-5, atol=0)


def test_checkpoint_rejects_truncated_and_corrupt_files(tmp_path):
    ctx = [mx.cpu()]
    net = stand_in(ctx)
    trainer = build_trainer(net, ctx, lr=0.01)
    train_epoch(net, trainer, make_batches(1, 2), ctx, progress=False)
    path = tmp_path / "good.ckpt"
    save_checkpoint(path, net, trainer, {"iteration": 1})
    blob = path.read_bytes()
    for name, data in [("truncated.ckpt", blob[: len(blob) - 10]), ("headless.ckpt", blob[:12]),
                       ("flipped.ckpt", blob[:-5] + bytes([blob[-5] ^ 0xFF]) + blob[-4:]),
                       ("other.ckpt", b"not a checkpoint at all")]:
        bad = tmp_path / name
        bad.write_bytes(data)
        before = params_numpy(net)
        with pytest.raises(CheckpointError, match=name):
            load_checkpoint(bad, net, trainer)
        assert_params_close(params_numpy(net), before, rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="missing.ckpt"):
        load_checkpoint(tmp_path / "missing.ckpt", net)
    with pytest.raises(CheckpointError, match="does not fit"):
        load_checkpoint(path, mlsl_net(ctx))


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    ctx = [mx.cpu()]
    net = stand_in(ctx)
    trainer = build_trainer(net, ctx, lr=0.01)
    path = tmp_path / "last.ckpt"
    save_checkpoint(path, net, trainer, {"iteration": 0})
    good = path.read_bytes()
    with pytest.raises(TypeError, match="JSON"):
        save_checkpoint(path, net, trainer, {"iteration": object()})

    def crash(src, dst):
        raise OSError("simulated crash before the rename")

    train_epoch(net, trainer, make_batches(1, 2), ctx, progress=False)
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(path, net, trainer, {"iteration": 1})
    monkeypatch.undo()
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["last.ckpt"]
    assert load_checkpoint(path, net, trainer) == {"iteration": 0}


def test_checkpoint_without_trainer_states_loads_parameters(tmp_path):
    ctx = [mx.cpu()]
    net = stand_in(ctx)
    path = tmp_path / "params_only.ckpt"
    save_checkpoint(path, net, None, {"note": "no trainer"})
    other = stand_in(ctx, seed=4)
    assert load_checkpoint(path, other, build_trainer(other, ctx, lr=0.1)) == {"note": "no trainer"}
    assert_params_close(params_numpy(other), params_numpy(net), rtol=0, atol=0)
    assert math.isfinite(other.bn.running_var.data().asnumpy().sum())

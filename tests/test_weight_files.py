"""The authors' 203-key MLSL-PWL files, the weights inspector and the one loader."""
import logging

import mxnet as mx
import numpy as np
import pytest
from test_model_weights import (
    WIDTH,
    _assert_unchanged,
    _net,
    _snapshot,
    _value,
    ademxapp_shapes,
    write_params,
)

from mlsl_gluon.model import (
    MLSLNet,
    WeightsError,
    export_symbol,
    init_params,
    inspect_weights,
    load_ademxapp_params,
    load_network_weights,
    save_ademxapp_params,
    save_weights,
)
from mlsl_gluon.training.checkpoint import save_checkpoint
from mlsl_gluon.training.inputs import InputError, weights_kind


def released_branch_shapes(width, num_classes):
    """The 8 classification-branch keys of the MLSL release, written out from its symbol:
    util1/symbol/resnet_v2.py fcrna_model_a1_1 (L444-453): classifier2 = 1x1 conv 2048 then
    3x3 conv 2048 on relu7 (4096 channels), named 'conv61a' (L396) and 'logistic<C>' (L403);
    rn_top_1 (L362-366): FC 'bCls0' 512 and FC 'bCls1' C on the pooled map; every conv and FC
    has '_weight' and '_bias' (util1/symbol/symbol.py conv L48-82, fc L154-167)."""
    def w(c):
        return max(1, round(c * width))

    return {"arg:conv61a_weight": (w(2048), w(4096), 1, 1), "arg:conv61a_bias": (w(2048),),
            "arg:logistic%d_weight" % num_classes: (w(2048), w(2048), 3, 3),
            "arg:logistic%d_bias" % num_classes: (w(2048),),
            "arg:bCls0_weight": (w(512), w(2048)), "arg:bCls0_bias": (w(512),),
            "arg:bCls1_weight": (num_classes, w(512)), "arg:bCls1_bias": (num_classes,)}


def mlsl_shapes(width, num_classes):
    return {**ademxapp_shapes(width, num_classes), **released_branch_shapes(width, num_classes)}


BRANCH_SPOTS = {"cls_branch.conv1.weight": "arg:conv61a_weight",
                "cls_branch.conv1.bias": "arg:conv61a_bias",
                "cls_branch.conv2.weight": "arg:logistic19_weight",
                "cls_branch.conv2.bias": "arg:logistic19_bias",
                "cls_branch.fc1.weight": "arg:bCls0_weight", "cls_branch.fc1.bias": "arg:bCls0_bias",
                "cls_branch.fc2.weight": "arg:bCls1_weight", "cls_branch.fc2.bias": "arg:bCls1_bias"}


def test_released_mlsl_file_lands_in_the_right_blocks(tmp_path):
    path = tmp_path / "gta_mlsl_pwl.params"
    values = write_params(path, mlsl_shapes(WIDTH, 19))
    assert len(values) == 203
    net = _net(19)
    report = load_ademxapp_params(net, path)
    assert sorted(report["loaded"]) == sorted(values) and report["missing"] == report["branch_kept"] == []
    for ours, theirs in {**BRANCH_SPOTS, "trunk.res6a.res_branch2b2.weight": "arg:res6a_branch2b2_weight",
                         "seg_head.linear.bias": "arg:linear19_bias"}.items():
        np.testing.assert_array_equal(_value(net, ours), values[theirs], err_msg=ours)
    # the branch computes what the file's layers compute (1x1 conv and FC as plain algebra)
    feat = mx.nd.random.uniform(shape=(1, net.trunk.out_channels, 3, 4))
    conv1 = np.einsum("oi,nihw->nohw", values["arg:conv61a_weight"][:, :, 0, 0], feat.asnumpy()) \
        + values["arg:conv61a_bias"][None, :, None, None]
    np.testing.assert_allclose(net.cls_branch.conv1(feat).asnumpy(), conv1, rtol=1e-5, atol=1e-4)
    pooled = mx.nd.random.uniform(shape=(2, values["arg:bCls1_weight"].shape[1]))
    np.testing.assert_allclose(net.cls_branch.fc2(pooled).asnumpy(),
                               pooled.asnumpy() @ values["arg:bCls1_weight"].T + values["arg:bCls1_bias"],
                               rtol=1e-5, atol=1e-5)
    info = inspect_weights(path)
    assert (info.format, info.num_classes, info.width, info.has_classifier) == \
        ("ademxapp-mlsl", 19, WIDTH, True)
    seg_only = _net(19, with_classifier=False)  # evaluation: the branch is skipped
    assert len(load_ademxapp_params(seg_only, path)["ignored"]) == 8
    np.testing.assert_array_equal(_value(seg_only, "trunk.bn7.beta"), values["arg:bn7_beta"])


def test_save_in_the_released_format_round_trips(tmp_path):
    net = _net(16)
    for p in net.collect_params().values():
        p.set_data(mx.nd.random.uniform(0.5, 1.5, shape=p.shape))
    path = save_ademxapp_params(net, tmp_path / "out" / "synthia_mlsl.params")
    saved = mx.nd.load(str(path))
    assert {k: tuple(v.shape) for k, v in saved.items()} == mlsl_shapes(WIDTH, 16)
    fresh = _net(16)
    load_ademxapp_params(fresh, path)
    for key, value in _snapshot(net).items():
        np.testing.assert_array_equal(_value(fresh, key), value, err_msg=key)
    x = mx.nd.random.normal(shape=(1, 3, 37, 29))
    for a, b in zip(net(x), fresh(x)):
        np.testing.assert_array_equal(a.asnumpy(), b.asnumpy())
    cbst = save_ademxapp_params(_net(16, with_classifier=False), tmp_path / "cbst.params")
    assert set(mx.nd.load(str(cbst))) == set(ademxapp_shapes(WIDTH, 16))


def test_cbst_file_leaves_the_branch_initialised_with_a_note(tmp_path, caplog):
    path = tmp_path / "gta_rna-a1_cls19_s8_ep-0000.params"
    values = write_params(path, ademxapp_shapes(WIDTH, 19))
    net = _net(19)
    before = _snapshot(net)
    with caplog.at_level(logging.INFO, logger="mlsl_gluon.model.weights"):
        report = load_ademxapp_params(net, path)
    assert sorted(report["branch_kept"]) == sorted(BRANCH_SPOTS.values())
    assert "without the MLSL classification branch" in caplog.text
    for key in BRANCH_SPOTS:
        np.testing.assert_array_equal(_value(net, key), before[key], err_msg=key)
    np.testing.assert_array_equal(_value(net, "seg_head.conv6a.weight"), values["arg:conv6a_weight"])
    assert inspect_weights(path).format == "ademxapp-cbst"


@pytest.mark.parametrize("change, named", [
    (lambda s: s.update({"arg:bCls1_weight": (19, 7)}), ["arg:bCls1_weight", "(19, 7)", "(19, 32)"]),
    (lambda s: s.update({"arg:bCls2_weight": (3, 3)}), ["unexpected keys (1)", "arg:bCls2_weight"]),
    (lambda s: s.pop("arg:bCls1_bias"), ["missing keys (1)", "arg:bCls1_bias"]),
    (lambda s: s.update({"arg:logistic16_weight": s.pop("arg:logistic19_weight")}),
     ["arg:logistic16_weight", "arg:logistic19_weight"]),
])
def test_bad_mlsl_file_names_file_and_key_and_changes_nothing(tmp_path, change, named):
    shapes = mlsl_shapes(WIDTH, 19)
    change(shapes)
    path = tmp_path / "bad_mlsl.params"
    write_params(path, shapes)
    net = _net(19)
    before = _snapshot(net)
    for load in (load_ademxapp_params, load_network_weights):
        with pytest.raises(ValueError) as err:
            load(net, path)
        assert str(path) in str(err.value) and all(fragment in str(err.value) for fragment in named)
        _assert_unchanged(net, before)


def test_inspector_tells_every_format(tmp_path):
    write_params(tmp_path / "imagenet.params", ademxapp_shapes(WIDTH, None))
    write_params(tmp_path / "cbst.params", ademxapp_shapes(WIDTH, 16))
    write_params(tmp_path / "mlsl.params", mlsl_shapes(WIDTH, 19))
    pwl = _net(19)
    save_weights(pwl, tmp_path / "gluon.params")
    save_weights(_net(16, with_classifier=False), tmp_path / "seg.params")
    save_checkpoint(tmp_path / "latest.params", pwl, None, {"round": 0})
    export_symbol(_net(5, with_classifier=False), tmp_path / "exp", input_shape=(1, 3, 16, 16))
    found = {name: inspect_weights(tmp_path / (name + ".params"))
             for name in ("imagenet", "cbst", "mlsl", "gluon", "seg", "latest")}
    found["symbol"] = inspect_weights(tmp_path / "exp-0000.params")
    summary = {k: (v.format, v.num_classes, v.width, v.has_classifier, v.kind) for k, v in found.items()}
    assert summary == {
        "imagenet": ("ademxapp-imagenet", None, WIDTH, False, "imagenet"),
        "cbst": ("ademxapp-cbst", 16, WIDTH, False, "source"),
        "mlsl": ("ademxapp-mlsl", 19, WIDTH, True, "source"),
        "gluon": ("gluon", 19, WIDTH, True, "gluon"),
        "seg": ("gluon", 16, WIDTH, False, "gluon"),
        "latest": ("checkpoint", 19, WIDTH, True, "gluon"),
        "symbol": ("symbol", 5, WIDTH, False, "gluon"),
    }
    junk = tmp_path / "junk.params"
    junk.write_bytes(b"not a weights file")
    for bad, message in ((junk, "junk.params: not an MXNet"), (tmp_path / "none.params", "none.params")):
        with pytest.raises(WeightsError, match=message):
            inspect_weights(bad)


def test_one_loader_for_every_format_and_train_takes_a_checkpoint(tmp_path):
    pwl = _net(19)
    for p in pwl.collect_params().values():
        p.set_data(mx.nd.random.uniform(0.5, 1.5, shape=p.shape))
    files = {"gluon": save_weights(pwl, tmp_path / "own.params"),
             "ademxapp-mlsl": save_ademxapp_params(pwl, tmp_path / "mlsl.params"),
             "symbol": export_symbol(pwl, tmp_path / "exp", input_shape=(1, 3, 16, 16),
                                     include_classifier=True)[1]}
    save_checkpoint(tmp_path / "latest.params", pwl, None, {"round": 1})
    files["checkpoint"] = tmp_path / "latest.params"
    expected = _snapshot(pwl)
    for fmt, path in files.items():
        net = MLSLNet(19, width=WIDTH)
        init_params(net)
        assert load_network_weights(net, path).format == fmt
        for key, value in expected.items():
            np.testing.assert_array_equal(_value(net, key), value, err_msg=f"{fmt}: {key}")
    # `train` checks its --weights with weights_kind and loads them with load_network_weights
    assert weights_kind(files["checkpoint"], 19) == "gluon"
    with pytest.raises(InputError, match="has head linear19 but this run has 16 classes"):
        weights_kind(files["checkpoint"], 16)
    # a segmentation-only file into a net with the branch: the branch keeps its values
    seg = save_weights(_net(19, with_classifier=False), tmp_path / "seg.params")
    net = _net(19)
    before = _snapshot(net)
    load_network_weights(net, seg)
    np.testing.assert_array_equal(_value(net, "cls_branch.fc2.weight"), before["cls_branch.fc2.weight"])
    wider = MLSLNet(19, width=2 * WIDTH)
    init_params(wider)
    wide_before = _snapshot(wider)
    with pytest.raises(WeightsError, match=r"(?s)latest.params.*shape mismatches"):
        load_network_weights(wider, files["checkpoint"])
    _assert_unchanged(wider, wide_before)

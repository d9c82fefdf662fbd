"""Weight files: ademxapp/CBST .params loading, our checkpoints, tools/convert_weights.py."""
import importlib.util
import logging
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest
from click.testing import CliRunner

from mlsl_gluon.model import (
    MLSLNet,
    ResNet38,
    init_params,
    load_ademxapp_params,
    load_weights,
    save_weights,
)
from mlsl_gluon.model.weights import ademxapp_param_map

PROJECT_ROOT = Path(__file__).resolve().parents[1]
WIDTH = 1 / 16
# ademxapp model A1 written out independently of the package: (level, units, channels, kernels)
A1_LEVELS = [(2, 3, [128, 128], [3, 3]), (3, 3, [256, 256], [3, 3]), (4, 6, [512, 512], [3, 3]),
             (5, 3, [512, 1024], [3, 3]), (6, 1, [512, 1024, 2048], [1, 3, 1]),
             (7, 1, [1024, 2048, 4096], [1, 3, 1])]


def ademxapp_shapes(width, num_classes=None):
    """Key -> shape of an ademxapp/CBST file; num_classes=None gives the ImageNet file."""
    def w(c):
        return max(1, round(c * width))

    shapes = {}

    def bn(name, c):
        shapes.update({"arg:%s_gamma" % name: (c,), "arg:%s_beta" % name: (c,),
                       "aux:%s_moving_mean" % name: (c,), "aux:%s_moving_var" % name: (c,)})

    def conv(name, cout, cin, k, bias=False):
        shapes["arg:%s_weight" % name] = (cout, cin, k, k)
        if bias:
            shapes["arg:%s_bias" % name] = (cout,)

    conv("conv1a", w(64), 3, 3)
    cin = w(64)
    for level, units, channels, kernels in A1_LEVELS:
        channels = [w(c) for c in channels]
        for u in range(units):
            unit = "%da" % level if u == 0 else "%db%d" % (level, u)
            c = cin
            for i, (cout, k) in enumerate(zip(channels, kernels)):
                branch = "branch2a" if i == 0 else "branch2b%d" % i
                bn("bn%s_%s" % (unit, branch), c)
                conv("res%s_%s" % (unit, branch), cout, c, k)
                c = cout
            if u == 0:
                conv("res%s_branch1" % unit, channels[-1], cin, 1)
            cin = channels[-1]
    bn("bn7", cin)
    if num_classes is None:
        shapes["arg:linear1000_weight"] = (1000, cin)
        shapes["arg:linear1000_bias"] = (1000,)
    else:
        conv("conv6a", w(512), cin, 3, bias=True)
        conv("linear%d" % num_classes, num_classes, w(512), 3, bias=True)
    return shapes


def write_params(path, shapes, seed=0):
    rng = np.random.RandomState(seed)
    arrays = {k: mx.nd.array(rng.uniform(0.5, 1.5, size=s).astype(np.float32)) for k, s in shapes.items()}
    mx.nd.save(str(path), arrays)
    return {k: a.asnumpy() for k, a in arrays.items()}


def _net(num_classes=19, ctx=None, **kwargs):
    net = MLSLNet(num_classes=num_classes, width=WIDTH, **kwargs)
    init_params(net, ctx=ctx or mx.cpu())
    return net


def _snapshot(net):
    return {k: p.data().asnumpy().copy() for k, p in net._collect_params_with_prefix().items()}


def _assert_unchanged(net, snapshot):
    for k, p in net._collect_params_with_prefix().items():
        np.testing.assert_array_equal(p.data().asnumpy(), snapshot[k], err_msg=k)


def _value(net, structured_name):
    return net._collect_params_with_prefix()[structured_name].data().asnumpy()


def test_cbst_file_lands_in_the_right_layers(tmp_path):
    path = tmp_path / "gta_rna-a1_cls19_s8_ep-0000.params"
    values = write_params(path, ademxapp_shapes(WIDTH, 19))
    net = _net(19, ctx=[mx.cpu(0), mx.cpu(1)])
    cls_before = {k: v for k, v in _snapshot(net).items() if k.startswith("cls_branch.")}
    report = load_ademxapp_params(net, path)
    assert sorted(report["loaded"]) == sorted(values) and report["missing"] == []
    spot_checks = {
        "trunk.conv1a.weight": "arg:conv1a_weight",
        "trunk.res2a.bn_branch2a.gamma": "arg:bn2a_branch2a_gamma",
        "trunk.res2a.branch1.weight": "arg:res2a_branch1_weight",
        "trunk.res4b3.res_branch2b1.weight": "arg:res4b3_branch2b1_weight",
        "trunk.res5b2.bn_branch2b1.running_var": "aux:bn5b2_branch2b1_moving_var",
        "trunk.res6a.bn_branch2b2.running_mean": "aux:bn6a_branch2b2_moving_mean",
        "trunk.res6a.res_branch2b2.weight": "arg:res6a_branch2b2_weight",
        "trunk.res7a.branch1.weight": "arg:res7a_branch1_weight",
        "trunk.bn7.beta": "arg:bn7_beta",
        "seg_head.conv6a.bias": "arg:conv6a_bias",
        "seg_head.linear.weight": "arg:linear19_weight",
        "seg_head.linear.bias": "arg:linear19_bias",
    }
    for ours, theirs in spot_checks.items():
        np.testing.assert_array_equal(_value(net, ours), values[theirs], err_msg=ours)
    # both device copies were written
    copies = net._collect_params_with_prefix()["trunk.res7a.branch1.weight"].list_data()
    assert len(copies) == 2
    np.testing.assert_array_equal(copies[1].asnumpy(), values["arg:res7a_branch1_weight"])
    for k, v in cls_before.items():  # not in ademxapp files: untouched
        np.testing.assert_array_equal(_value(net, k), v)
    # every ademxapp key maps to a distinct parameter; the file's 195 are the trunk and head
    mapping = ademxapp_param_map(net)
    assert len({id(p) for p in mapping.values()}) == len(mapping) == len(values) + 8
    assert set(values) < set(mapping)


def test_imagenet_file_needs_allow_missing_and_skips_its_classifier(tmp_path, caplog):
    path = tmp_path / "ilsvrc-cls_rna-a1_cls1000_ep-0001.params"
    values = write_params(path, ademxapp_shapes(WIDTH, None))
    net = _net(19)
    before = _snapshot(net)
    with pytest.raises(ValueError, match="arg:conv6a_weight") as err:
        load_ademxapp_params(net, path)
    assert str(path) in str(err.value) and "missing keys (4)" in str(err.value)
    _assert_unchanged(net, before)
    with caplog.at_level(logging.INFO, logger="mlsl_gluon.model.weights"):
        report = load_ademxapp_params(net, path, allow_missing=True)
    assert report["ignored"] == ["arg:linear1000_bias", "arg:linear1000_weight"]
    assert sorted(report["missing"]) == ["arg:conv6a_bias", "arg:conv6a_weight",
                                         "arg:linear19_bias", "arg:linear19_weight"]
    assert "linear1000" in caplog.text and "conv6a_weight" in caplog.text
    np.testing.assert_array_equal(_value(net, "trunk.bn7.gamma"), values["arg:bn7_gamma"])
    np.testing.assert_array_equal(_value(net, "seg_head.conv6a.weight"), before["seg_head.conv6a.weight"])
    trunk = ResNet38(width=WIDTH)  # the bare trunk takes the ImageNet file strictly
    init_params(trunk)
    assert load_ademxapp_params(trunk, path)["missing"] == []
    np.testing.assert_array_equal(trunk.conv1a.weight.data().asnumpy(), values["arg:conv1a_weight"])


def _corrupt(shapes, kind):
    shapes = dict(shapes)
    if kind == "wrong shape":
        shapes["arg:res3b1_branch2a_weight"] = (3, 3, 3, 3)
        return shapes, ["arg:res3b1_branch2a_weight", "(3, 3, 3, 3)", "(16, 16, 3, 3)"]
    if kind == "missing key":
        del shapes["aux:bn4b2_branch2b1_moving_var"]
        return shapes, ["missing keys (1)", "aux:bn4b2_branch2b1_moving_var"]
    if kind == "extra key":
        shapes["arg:res8a_branch2a_weight"] = (2, 2, 1, 1)
        return shapes, ["unexpected keys (1)", "arg:res8a_branch2a_weight"]
    # a SYNTHIA (16-class) file loaded into a 19-class net
    shapes["arg:linear16_weight"] = shapes.pop("arg:linear19_weight")[:0] + (16, 32, 3, 3)
    shapes["arg:linear16_bias"] = (16,)
    del shapes["arg:linear19_bias"]
    return shapes, ["arg:linear19_weight", "arg:linear16_weight"]


@pytest.mark.parametrize("kind", ["wrong shape", "missing key", "extra key", "wrong classes"])
def test_bad_ademxapp_file_is_reported_and_changes_nothing(tmp_path, kind):
    shapes, expected_in_message = _corrupt(ademxapp_shapes(WIDTH, 19), kind)
    path = tmp_path / "bad.params"
    write_params(path, shapes)
    net = _net(19)
    before = _snapshot(net)
    with pytest.raises(ValueError) as err:
        load_ademxapp_params(net, path)
    message = str(err.value)
    assert str(path) in message and "nothing was loaded" in message
    for fragment in expected_in_message:
        assert fragment in message
    _assert_unchanged(net, before)


def test_unreadable_or_absent_file_and_uninitialised_net(tmp_path):
    net = _net(19)
    garbage = tmp_path / "garbage.params"
    garbage.write_bytes(b"not an ndarray file" * 10)
    with pytest.raises(ValueError, match="garbage.params"):
        load_ademxapp_params(net, garbage)
    with pytest.raises(FileNotFoundError, match="nope.params"):
        load_ademxapp_params(net, tmp_path / "nope.params")
    unnamed = tmp_path / "list.params"
    mx.nd.save(str(unnamed), [mx.nd.zeros(3)])
    with pytest.raises(ValueError, match="list.params.*unnamed list"):
        load_ademxapp_params(net, unnamed)
    path = tmp_path / "ok.params"
    write_params(path, ademxapp_shapes(WIDTH, 19))
    with pytest.raises(RuntimeError, match="init_params"):
        load_ademxapp_params(MLSLNet(19, width=WIDTH), path)
    with pytest.raises(ValueError, match="ok.params.*load_ademxapp_params"):
        load_weights(net, path)
    ours = save_weights(net, tmp_path / "ours.params")
    with pytest.raises(ValueError, match="ours.params.*load_weights"):
        load_ademxapp_params(net, ours)


def test_checkpoint_round_trip(tmp_path):
    net = _net(5)
    for p in net.collect_params().values():  # make every array distinctive
        p.set_data(mx.nd.random.uniform(0.5, 1.5, shape=p.shape))
    path = save_weights(net, tmp_path / "run" / "epoch-1.params")
    assert sorted(f.name for f in path.parent.iterdir()) == ["epoch-1.params"]
    fresh = MLSLNet(num_classes=5, width=WIDTH)  # not initialised: load_weights does it
    load_weights(fresh, path, ctx=mx.cpu())
    x = mx.nd.random.normal(shape=(1, 3, 45, 37))
    for a, b in zip(net(x), fresh(x)):
        np.testing.assert_array_equal(a.asnumpy(), b.asnumpy())


def test_checkpoint_mismatch_and_missing_branch(tmp_path):
    seg_only = _net(5, with_classifier=False)
    path = save_weights(seg_only, tmp_path / "seg.params")
    full = _net(5)
    before = _snapshot(full)
    with pytest.raises(ValueError, match="cls_branch.fc2.weight") as err:
        load_weights(full, path)
    assert str(path) in str(err.value)
    _assert_unchanged(full, before)
    load_weights(full, path, allow_missing=True)
    np.testing.assert_array_equal(_value(full, "trunk.bn7.gamma"), _value(seg_only, "trunk.bn7.gamma"))
    np.testing.assert_array_equal(_value(full, "cls_branch.fc2.weight"), before["cls_branch.fc2.weight"])
    wider = MLSLNet(num_classes=5, width=2 * WIDTH, with_classifier=False)
    init_params(wider)
    wide_before = _snapshot(wider)
    with pytest.raises(ValueError, match="shape mismatches"):
        load_weights(wider, path)
    _assert_unchanged(wider, wide_before)


def test_save_is_atomic(tmp_path, monkeypatch):
    net = _net(3)
    path = save_weights(net, tmp_path / "ck.params")
    good = path.read_bytes()

    def crash_midway(filename, *args, **kwargs):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(net, "save_parameters", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        save_weights(net, path)
    assert path.read_bytes() == good
    assert [f.name for f in tmp_path.iterdir()] == ["ck.params"]


def _convert_tool():
    tool = PROJECT_ROOT / "tools" / "convert_weights.py"
    spec = importlib.util.spec_from_file_location("convert_weights", tool)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_convert_tool_writes_a_loadable_checkpoint(tmp_path):
    src = tmp_path / "synthia_rna-a1_cls16_s8_ep-0000.params"
    values = write_params(src, ademxapp_shapes(WIDTH, 16))
    dst = tmp_path / "out" / "synthia.params"
    main = _convert_tool()
    result = CliRunner().invoke(main, [str(src), str(dst), "--width", str(WIDTH)])
    assert result.exit_code == 0, result.output
    assert "(ademxapp-cbst): matches MLSLNet(num_classes=16" in result.output
    net = MLSLNet(num_classes=16, width=WIDTH, with_classifier=False)
    load_weights(net, dst)
    np.testing.assert_array_equal(_value(net, "seg_head.linear.bias"), values["arg:linear16_bias"])
    np.testing.assert_array_equal(_value(net, "trunk.res5a.branch1.weight"),
                                  values["arg:res5a_branch1_weight"])
    bad = tmp_path / "bad.params"
    write_params(bad, _corrupt(ademxapp_shapes(WIDTH, 19), "missing key")[0])
    result = CliRunner().invoke(main, [str(bad), "--check-only", "--width", str(WIDTH)])
    assert result.exit_code != 0 and "bn4b2_branch2b1_moving_var" in result.output

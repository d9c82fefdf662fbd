"""Export: symbol JSON + params round trip, ONNX through onnxruntime."""
import mxnet as mx
import numpy as np
import pytest

from mlsl_gluon.model import MLSLNet, export_onnx, export_symbol, init_params

WIDTH = 1 / 16


def _net(num_classes, with_classifier=True):
    """Small net with non-trivial BN statistics, so BN handling is part of the comparison."""
    net = MLSLNet(num_classes=num_classes, width=WIDTH, with_classifier=with_classifier)
    init_params(net, ctx=mx.cpu())
    rng = np.random.RandomState(0)
    for name, param in net._collect_params_with_prefix().items():
        if name.endswith("running_mean"):
            param.set_data(mx.nd.array(rng.normal(0, 0.1, size=param.shape)))
        elif name.endswith("running_var"):
            param.set_data(mx.nd.array(rng.uniform(0.5, 1.5, size=param.shape)))
        elif name.endswith(("gamma", "beta")) or name.endswith("bias"):
            param.set_data(mx.nd.array(rng.uniform(-0.2, 1.2, size=param.shape)))
    return net


@pytest.mark.parametrize("with_classifier,include_classifier", [(True, True), (True, False), (False, False)])
def test_symbol_export_round_trip_is_identical(tmp_path, with_classifier, include_classifier):
    net = _net(19, with_classifier)
    x = mx.nd.random.normal(shape=(2, 3, 97, 131))
    imperative = net(x)
    imperative = imperative if with_classifier else [imperative]
    symbol_file, params_file = export_symbol(net, tmp_path / "export" / "mlsl", input_shape=(1, 3, 64, 64),
                                             include_classifier=include_classifier)
    both = with_classifier and include_classifier
    expected = net(x) if both else [net.segment(x)]  # now hybridized: the very graph exported
    assert symbol_file.is_file() and params_file.name == "mlsl-0000.params"
    saved = mx.nd.load(str(params_file))
    # for inference only the trunk and the segmentation head: no branch parameter is written
    assert any("cls_" in k for k in saved) == both
    imported = mx.gluon.SymbolBlock.imports(str(symbol_file), ["data"], str(params_file), ctx=mx.cpu())
    got = imported(x)  # a different size than the traced one
    got = got if both else [got]
    assert len(got) == len(expected) == (2 if both else 1)
    for a, b, c in zip(got, expected, imperative):
        assert a.shape == b.shape
        np.testing.assert_array_equal(a.asnumpy(), b.asnumpy())
        np.testing.assert_allclose(a.asnumpy(), c.asnumpy(), rtol=1e-5, atol=1e-5)
    assert float(expected[0].abs().max().asscalar()) > 0.1  # not a degenerate all-zero output


@pytest.mark.parametrize("include_classifier", [True, False])
def test_onnx_export_matches_onnxruntime(tmp_path, include_classifier):
    ort = pytest.importorskip("onnxruntime")  # part of the pinned test extras
    net = _net(16)
    x = mx.nd.random.normal(shape=(1, 3, 72, 88))
    seg, cls = net(x)
    path = export_onnx(net, tmp_path / "mlsl.onnx", input_shape=x.shape,
                       include_classifier=include_classifier)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # the exporter lists weights as graph inputs; ORT warns per weight
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["data"]
    outputs = session.run(None, {"data": x.asnumpy()})
    references = (seg.asnumpy(), cls.asnumpy()) if include_classifier else (seg.asnumpy(),)
    assert len(outputs) == len(references)
    assert outputs[0].shape == (1, 16, 9, 11)
    for got, ref in zip(outputs, references):
        assert got.shape == ref.shape
        scale = np.abs(ref).max()
        assert scale > 0.1
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5 * scale)

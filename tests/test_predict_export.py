"""`mlsl-gluon predict` and `mlsl-gluon export` at reduced width (weights saved by the test)."""
import mxnet as mx
import numpy as np
import pytest
from click.testing import CliRunner
from evaluation_helpers import make_net, save_ademxapp, save_gluon
from PIL import Image

from mlsl_gluon.cli import main
from mlsl_gluon.data import normalize
from mlsl_gluon.data.classes import CITYSCAPES_PALETTE, LABEL_ID_TO_TRAIN_ID
from mlsl_gluon.evaluation import predict_labels
from mlsl_gluon.evaluation.visualize import colorize, legend, overlay


def _run(args):
    return CliRunner().invoke(main, args, catch_exceptions=False)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("predict")
    net = make_net(19, with_classifier=True, seed=3)
    return net, save_gluon(net, tmp / "net.params")


def test_colorize_overlay_legend_known_answers():
    pred = np.array([[0, 18], [255, 7]])
    color = colorize(pred, CITYSCAPES_PALETTE)
    assert color[0, 0].tolist() == [128, 64, 128]  # road
    assert color[0, 1].tolist() == [119, 11, 32]  # bicycle
    assert color[1, 0].tolist() == [0, 0, 0]  # no class
    image = np.full((2, 2, 3), 100, np.uint8)
    blend = overlay(image, color, alpha=0.25)
    assert blend[0, 0].tolist() == [np.round(0.75 * 100 + 0.25 * c) for c in (128, 64, 128)]
    with pytest.raises(ValueError, match="alpha"):
        overlay(image, color, alpha=1.5)
    pic = legend(["road", "sidewalk"], CITYSCAPES_PALETTE[:2], swatch=10, width=80)
    assert pic.shape == (20, 80, 3)
    assert pic[5, 5].tolist() == [128, 64, 128] and pic[15, 5].tolist() == [244, 35, 232]
    assert (pic[:10, 20:] < 128).any()  # the class name is drawn beside the swatch


def test_predict_command_writes_colour_overlay_legend(weights, tmp_path):
    net, path = weights
    rng = np.random.default_rng(5)
    images = []
    for i, shape in enumerate([(37, 53), (40, 40)]):
        image = rng.integers(0, 256, size=shape + (3,), dtype=np.uint8)
        file = tmp_path / f"frame{i}_leftImg8bit.png"
        Image.fromarray(image).save(file)
        images.append((file, image))
    out = tmp_path / "out"
    result = _run(["predict", *[str(f) for f, _ in images], "--weights", str(path), "--out", str(out),
                   "--alpha", "0.4", "--label-ids"])
    assert result.exit_code == 0, result.output
    legend_png = np.array(Image.open(out / "legend.png"))
    assert legend_png.shape == (19 * 20, 200, 3)
    for i, (_, image) in enumerate(images):
        expected = predict_labels(net, [image], [mx.cpu()], flip=True)[0]
        assert len(np.unique(expected)) > 1
        color = np.array(Image.open(out / f"frame{i}_pred.png"))
        np.testing.assert_array_equal(color, CITYSCAPES_PALETTE[expected])
        blend = np.array(Image.open(out / f"frame{i}_overlay.png"))
        np.testing.assert_array_equal(blend, overlay(image, color, 0.4))
        ids = np.array(Image.open(out / f"frame{i}_labelIds.png"))
        np.testing.assert_array_equal(LABEL_ID_TO_TRAIN_ID[ids], expected)


def test_predict_errors(weights, tmp_path):
    _, path = weights
    result = _run(["predict", str(tmp_path / "missing.png"), "--weights", str(path), "--out", str(tmp_path)])
    assert result.exit_code != 0 and "missing.png" in result.output
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for folder in "ab":
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / folder / "x.png")
    result = _run(["predict", str(tmp_path / "a/x.png"), str(tmp_path / "b/x.png"),
                   "--weights", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code != 0 and "same outputs" in result.output
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG nonsense")
    result = _run(["predict", str(broken), "--weights", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code != 0 and "broken.png" in result.output


def test_export_symbol_matches_mxnet(weights, tmp_path):
    net, path = weights
    result = _run(["export", "--weights", str(path), "--format", "symbol", "--out",
                   str(tmp_path / "exp" / "mlsl"), "--input-size", "48,64"])
    assert result.exit_code == 0, result.output
    block = mx.gluon.SymbolBlock.imports(str(tmp_path / "exp" / "mlsl-symbol.json"), ["data"],
                                         str(tmp_path / "exp" / "mlsl-0000.params"), ctx=mx.cpu())
    x = mx.nd.array(normalize(np.random.default_rng(0).integers(0, 256, (56, 72, 3), dtype=np.uint8))[None])
    ours = net(x)[0].asnumpy()  # the segmentation logits of the full network
    exported = block(x).asnumpy()
    assert exported.shape == (1, 19, 7, 9)
    np.testing.assert_allclose(exported, ours, rtol=1e-4, atol=1e-4)


def test_export_onnx_matches_mxnet(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    net = make_net(16, seed=4)
    path = save_ademxapp(net, tmp_path / "synthia_rna-a1_cls16_s8_ep-0000.params")
    result = _run(["export", "--weights", str(path), "--format", "onnx", "--out", str(tmp_path / "m"),
                   "--input-size", "40,56"])
    assert result.exit_code == 0, result.output
    options = ort.SessionOptions()
    options.log_severity_level = 3  # MXNet's exporter lists weights as inputs: one warning each
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), options, providers=["CPUExecutionProvider"])
    x = normalize(np.random.default_rng(1).integers(0, 256, (40, 56, 3), dtype=np.uint8))[None]
    (got,) = session.run(None, {session.get_inputs()[0].name: x})
    expected = net(mx.nd.array(x)).asnumpy()
    assert got.shape == expected.shape == (1, 16, 5, 7)
    scale = np.abs(expected).max()
    assert scale > 1.0  # not a trivially zero output
    # float32 summation order differs between the runtimes: error relative to the logit range
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_array_equal(got.argmax(axis=1), expected.argmax(axis=1))


def test_export_rejects_bad_size(weights, tmp_path):
    _, path = weights
    result = _run(["export", "--weights", str(path), "--format", "onnx", "--out", str(tmp_path / "m"),
                   "--input-size", "64"])
    assert result.exit_code != 0 and "H,W" in result.output

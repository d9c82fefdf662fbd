"""`mlsl-gluon evaluate` and `mlsl-gluon table` through click's CliRunner; cli.common helpers."""
import json

import mxnet as mx
import numpy as np
import pytest
from click.testing import CliRunner
from evaluation_helpers import make_cityscapes, make_net, official_class_iou, save_ademxapp, save_gluon

from mlsl_gluon.cli import main
from mlsl_gluon.cli.common import parse_ctx, parse_scales
from mlsl_gluon.data import Cityscapes
from mlsl_gluon.data.classes import CITYSCAPES_19_NAMES
from mlsl_gluon.evaluation import ConfusionMatrix, evaluate, read_evaluation
from mlsl_gluon.model import export_symbol, save_ademxapp_params
from mlsl_gluon.training.checkpoint import save_checkpoint


def test_parse_ctx():
    assert parse_ctx("cpu") == [mx.cpu()]
    assert parse_ctx("cpu:0,1") == [mx.cpu(0), mx.cpu(1)]
    assert parse_ctx("gpu:0,1") == [mx.gpu(0), mx.gpu(1)]
    assert parse_ctx(" GPU:3 ") == [mx.gpu(3)]
    for bad in ("tpu", "gpu:", "gpu:a", "gpu:0,0", "cpu:-1"):
        with pytest.raises(ValueError, match="bad device spec"):
            parse_ctx(bad)


def test_parse_scales():
    assert parse_scales("0.75,1.0,1.25") == (0.75, 1.0, 1.25)
    with pytest.raises(ValueError, match="comma-separated"):
        parse_scales("0.75;1")
    with pytest.raises(ValueError, match="> 0"):
        parse_scales("1,0")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny Cityscapes val, one network, and that network in every weight-file format."""
    tmp = tmp_path_factory.mktemp("evalcli")
    make_cityscapes(tmp / "cs")
    net = make_net(19)
    pwl = make_net(19, with_classifier=True, seed=2)
    files = {
        "gluon": save_gluon(net, tmp / "own.params"),
        "ademxapp": save_ademxapp(net, tmp / "gta_rna-a1_cls19_s8_ep-0000.params"),
        "pwl": save_gluon(pwl, tmp / "pwl.params"),
    }
    save_checkpoint(tmp / "latest.params", pwl, None, {"round": 1})
    files["checkpoint"] = tmp / "latest.params"
    files["mlsl"] = save_ademxapp_params(pwl, tmp / "gta_mlsl_pwl.params")
    files["symbol"] = export_symbol(pwl, tmp / "exported", input_shape=(1, 3, 16, 16))[1]
    return tmp, net, pwl, files


# The format each file of `setup` is reported as, and whether it holds `net` or `pwl`.
EXPECTED_FORMAT = {"gluon": ("gluon", "net"), "ademxapp": ("ademxapp-cbst", "net"),
                   "pwl": ("gluon", "pwl"), "checkpoint": ("checkpoint", "pwl"),
                   "mlsl": ("ademxapp-mlsl", "pwl"), "symbol": ("symbol", "pwl")}


def _run(args):
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    return result


def test_evaluate_command_matches_library_for_every_weight_format(setup):
    tmp, net, pwl, files = setup
    dataset = Cityscapes(tmp / "cs", split="val", num_classes=19)
    direct = evaluate(net, dataset, mx.cpu(), flip=True, progress=False)
    direct_pwl = evaluate(pwl, dataset, mx.cpu(), flip=True, progress=False)
    assert direct != direct_pwl and direct.matrix.sum() == direct_pwl.matrix.sum()
    assert set(files) == set(EXPECTED_FORMAT)
    for fmt, path in files.items():
        out = tmp / f"eval_{fmt}"
        result = _run(["evaluate", "--weights", str(path), "--data-root", str(tmp / "cs"),
                       "--out", str(out)])
        assert result.exit_code == 0, result.output
        matrix = ConfusionMatrix.load(out / "confusion_matrix.json")
        reported, holds = EXPECTED_FORMAT[fmt]
        assert matrix == (direct if holds == "net" else direct_pwl), fmt
        record = read_evaluation(out)
        assert record["metadata"]["weights_format"] == reported
        assert record["metadata"]["width"] == pytest.approx(1 / 16)
        assert record["pixels"] == int(matrix.matrix.sum()) > 0
        assert "mIoU" in result.output and "road" in result.output


def test_evaluate_options_and_predictions(setup):
    tmp, net, _, files = setup
    out = tmp / "eval_opts"
    result = _run(["evaluate", "--weights", str(files["gluon"]), "--data-root", str(tmp / "cs"),
                   "--num-classes", "19", "--no-flip", "--scales", "0.5,1.0", "--ctx", "cpu:0,1",
                   "--out", str(out), "--save-predictions"])
    assert result.exit_code == 0, result.output
    dataset = Cityscapes(tmp / "cs", split="val", num_classes=19)
    direct = evaluate(net, dataset, mx.cpu(), flip=False, scales=(0.5, 1.0), progress=False)
    assert ConfusionMatrix.load(out / "confusion_matrix.json") == direct
    meta = json.loads((out / "iou.json").read_text())["metadata"]
    assert meta["flip"] is False and meta["scales"] == [0.5, 1.0] and meta["images"] == 3
    assert len(list((out / "predictions").rglob("*.png"))) == 3

    listed = tmp / "one.txt"
    listed.write_text("leftImg8bit/val/lindau/lindau_000001_000019_leftImg8bit.png\n")
    result = _run(["evaluate", "--weights", str(files["gluon"]), "--data-root", str(tmp / "cs"),
                   "--list-file", str(listed), "--out", str(tmp / "eval_list")])
    assert result.exit_code == 0, result.output
    assert read_evaluation(tmp / "eval_list")["metadata"]["images"] == 1


def test_evaluate_command_agrees_with_official_evaluator(setup, tmp_path):
    """The prediction files `evaluate --save-predictions` writes, scored by cityscapesscripts
    against the gtFine labelIds files, give the per-class IoU our command reported."""
    tmp, _, _, files = setup
    out = tmp_path / "eval"
    result = _run(["evaluate", "--weights", str(files["checkpoint"]), "--data-root", str(tmp / "cs"),
                   "--out", str(out), "--save-predictions"])
    assert result.exit_code == 0, result.output
    gts = sorted((tmp / "cs" / "gtFine" / "val").rglob("*_gtFine_labelIds.png"))
    preds = [out / "predictions" / g.parent.name / g.name.replace("_gtFine_labelIds", "") for g in gts]
    theirs = official_class_iou(preds, gts, tmp_path)
    theirs = np.array([theirs[n] for n in CITYSCAPES_19_NAMES], dtype=np.float64)
    ours = np.array([np.nan if v is None else v for v in read_evaluation(out)["iou"]])
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    np.testing.assert_allclose(ours, theirs, atol=1e-6, rtol=0)
    assert np.nanmax(ours) > 0  # some class is partly right: the comparison is not all zeros


def test_evaluate_16_class_ademxapp_file(tmp_path):
    make_cityscapes(tmp_path / "cs")
    path = save_ademxapp(make_net(16), tmp_path / "synthia_rna-a1_cls16_s8_ep-0000.params")
    result = _run(["evaluate", "--weights", str(path), "--data-root", str(tmp_path / "cs"),
                   "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    record = read_evaluation(tmp_path / "out")
    assert record["num_classes"] == 16 and "miou13" in record and "mIoU* (13)" in result.output


def test_missing_inputs_say_what_to_obtain(setup, tmp_path):
    tmp, _, _, files = setup
    result = _run(["evaluate", "--weights", str(tmp_path / "nope.params"), "--data-root", str(tmp / "cs")])
    assert result.exit_code != 0
    assert "weights file not found" in result.output and "nope.params" in result.output
    assert "gta_rna-a1_cls19_s8_ep-0000.params" in result.output
    assert "synthia_rna-a1_cls16_s8_ep-0000.params" in result.output

    result = _run(["evaluate", "--weights", str(files["gluon"]), "--data-root", str(tmp_path / "nodata"),
                   "--out", str(tmp_path / "never")])
    assert result.exit_code != 0
    assert "data root not found" in result.output
    assert "leftImg8bit/val/<city>/<city>_<seq>_<frame>_leftImg8bit.png" in result.output
    assert "gtFine_trainvaltest.zip" in result.output
    assert not (tmp_path / "never").exists()  # nothing started half-way

    (tmp_path / "nolabels" / "leftImg8bit" / "val" / "x").mkdir(parents=True)
    result = _run(["evaluate", "--weights", str(files["gluon"]), "--data-root", str(tmp_path / "nolabels")])
    assert result.exit_code != 0 and "gtFine" in result.output


def test_bad_weight_files_are_named(setup, tmp_path):
    tmp, net, _, files = setup
    cs = str(tmp / "cs")
    junk = tmp_path / "junk.params"
    junk.write_bytes(b"not a params file")
    result = _run(["evaluate", "--weights", str(junk), "--data-root", cs])
    assert result.exit_code != 0 and "junk.params: not an MXNet .params weights file" in result.output

    imagenet = tmp_path / "ilsvrc-cls_rna-a1_cls1000_ep-0001.params"
    mx.nd.save(str(imagenet), {"arg:conv1a_weight": mx.nd.zeros((4, 3, 3, 3)),
                               "arg:linear1000_weight": mx.nd.zeros((1000, 256))})
    result = _run(["evaluate", "--weights", str(imagenet), "--data-root", cs])
    assert result.exit_code != 0 and "ImageNet classification model" in result.output

    result = _run(["evaluate", "--weights", str(files["ademxapp"]), "--data-root", cs, "--num-classes", "16"])
    assert result.exit_code != 0 and "holds a 19-class model but --num-classes is 16" in result.output

    result = _run(["evaluate", "--weights", str(files["gluon"]), "--data-root", cs, "--width", "0.125"])
    assert result.exit_code != 0
    assert "own.params" in result.output and "shape" in result.output and "--width 0.0625" in result.output

    corrupt = tmp_path / "latest.params"
    corrupt.write_bytes(files["checkpoint"].read_bytes()[:-10])
    result = _run(["evaluate", "--weights", str(corrupt), "--data-root", cs])
    assert result.exit_code != 0 and "truncated" in result.output

    result = _run(["evaluate", "--weights", str(files["gluon"]), "--data-root", cs, "--ctx", "tpu"])
    assert result.exit_code != 0 and "bad device spec" in result.output


def test_table_command(setup, tmp_path):
    tmp, _, _, files = setup
    out = tmp / "eval_table"
    assert _run(["evaluate", "--weights", str(files["gluon"]), "--data-root", str(tmp / "cs"),
                 "--out", str(out)]).exit_code == 0
    ours = 100 * np.nanmean([np.nan if v is None else v for v in read_evaluation(out)["iou"]])
    result = _run(["table", "--table", "table1", "--result", f"sisc={out}", "--result",
                   f"source-only={out / 'iou.json'}", "--out", str(tmp_path / "tables")])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("Table 1")
    assert lines[3].split()[:4] == ["ResNet-38", "(source", "only)", "ours"]
    assert lines[3].split()[-1] == f"{ours:.1f}" and lines[5].split()[-1] == f"{ours - 35.4:+.1f}"
    assert (tmp_path / "tables" / "table1.md").is_file()

    result = _run(["table", "--table", "table4", "--result", f"eta=0.05={out}"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1].split() == ["diff", f"{ours - 49.0:+.1f}"]

    result = _run(["table", "--table", "table1", "--result", f"bogus={out}"])
    assert result.exit_code != 0 and "unknown method" in result.output
    result = _run(["table", "--table", "table1", "--result", "sisc"])
    assert result.exit_code != 0 and "METHOD=PATH" in result.output

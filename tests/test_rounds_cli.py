"""`mlsl-gluon train` through click's CliRunner: help, and inputs checked before anything starts."""
import pytest
from click.testing import CliRunner

from mlsl_gluon.cli import main


def run(*args):
    return CliRunner().invoke(main, ["train", *args])


def test_help_documents_layout_and_weights():
    result = run("--help")
    assert result.exit_code == 0
    for text in ("DATA_ROOT/GTA5/images/NNNNN.png", "DATA_ROOT/SYNTHIA/GT/LABELS",
                 "DATA_ROOT/Cityscapes/leftImg8bit",
                 "gta_rna-a1_cls19_s8_ep-0000.params", "synthia_rna-a1_cls16_s8_ep-0000.params",
                 "--resume", "--set", "--kvstore", "sisc-pwl", "[default: cpu]"):
        assert text in result.output, text


@pytest.fixture
def data_root(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    return root


def test_missing_weights_says_what_to_obtain(tmp_path, data_root):
    result = run("--source", "gta5", "--method", "sisc", "--data-root", str(data_root),
                 "--weights", str(tmp_path / "nope.params"), "--out", str(tmp_path / "out"))
    assert result.exit_code != 0
    assert "nope.params not found" in result.output and "gta_rna-a1_cls19_s8_ep-0000.params" in result.output
    assert not (tmp_path / "out").exists()


def test_missing_dataset_says_what_to_obtain(tmp_path, data_root):
    import mxnet as mx

    weights = tmp_path / "synthia_rna-a1_cls16_s8_ep-0000.params"
    mx.nd.save(str(weights), {"arg:linear16_weight": mx.nd.zeros((16, 4, 3, 3))})
    result = run("--source", "synthia", "--method", "sisc", "--data-root", str(data_root), "--weights",
                 str(weights), "--out", str(tmp_path / "out"))
    assert result.exit_code != 0
    assert "SYNTHIA not usable at" in result.output and "SYNTHIA-RAND-CITYSCAPES" in result.output
    assert "DATA_ROOT/SYNTHIA/RGB/NNNNNNN.png" in result.output
    assert not (tmp_path / "out").exists()


def test_weights_for_the_other_class_count_are_refused(tmp_path, data_root):
    import mxnet as mx

    weights = tmp_path / "gta.params"
    mx.nd.save(str(weights), {"arg:linear19_weight": mx.nd.zeros((19, 4, 3, 3))})
    result = run("--source", "synthia", "--method", "sisc", "--data-root", str(data_root), "--weights",
                 str(weights), "--out", str(tmp_path / "out"))
    assert result.exit_code != 0 and "has head linear19 but this run has 16 classes" in result.output


def test_bad_overrides_and_ctx(tmp_path, data_root):
    common = ["--data-root", str(data_root), "--weights", "w", "--out", str(tmp_path / "o")]
    result = run(*common, "--set", "train.lamda=1")
    assert result.exit_code != 0 and "unknown key train.lamda" in result.output
    result = run(*common, "--ctx", "tpu")
    assert result.exit_code != 0 and "bad device spec" in result.output
    result = run(*common, "--config", str(tmp_path / "missing.yaml"))
    assert result.exit_code != 0 and "config file not found" in result.output

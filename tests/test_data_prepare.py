"""`mlsl-gluon prepare check|list` and tools/prepare_dataset.py."""
import subprocess
import sys

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from test_data_helpers import make_cityscapes, make_gta5, make_synthia, random_rgb, save_rgb, truncate

from mlsl_gluon.cli import main
from mlsl_gluon.data import GTA5, Cityscapes
from mlsl_gluon.data.prepare import check_dataset, write_dataset_list

PROJECT = __import__("pathlib").Path(__file__).resolve().parents[1]


def run(*args):
    return CliRunner().invoke(main, ["prepare", *map(str, args)])


def test_check_clean_gta5_tree(tmp_path):
    root = make_gta5(tmp_path / "gta5", count=3)
    save_rgb(root / "images" / "00002.png", random_rgb(40, 64))
    report = check_dataset("gta5", root, progress=False)
    assert report.ok and report.num_images == 3 and report.num_pairs == 3
    assert report.label_formats == {"8-bit palette": 3}
    result = run("check", "--dataset", "gta5", "--root", root)
    assert result.exit_code == 0, result.output
    assert "images: 3" in result.output and "problems: 0" in result.output
    assert "64x40: 3" in result.output


def test_check_reports_every_problem(tmp_path):
    root = make_gta5(tmp_path / "gta5", count=6)
    (root / "labels" / "00001.png").unlink()  # image without label
    (root / "images" / "00002.png").unlink()  # label without image
    truncate(root / "images" / "00003.png")  # truncated PNG
    Image.open(root / "labels" / "00004.png").convert("RGB").save(root / "labels" / "00004.png")
    (root / "labels" / "00005.png").write_bytes(b"not a png at all")
    save_rgb(root / "images" / "00006.png", random_rgb(30, 50))  # size mismatch: a note for GTA5
    result = run("check", "--dataset", "gta5", "--root", root)
    assert result.exit_code == 1
    out = result.output
    assert "problems: 5" in out
    assert "00001.png has no label" in out
    assert "labels/00002.png has no image" in out
    assert "images/00003.png: unreadable or truncated PNG" in out
    assert "labels/00004.png is 8-bit RGB; expected 8-bit palette" in out
    assert "labels/00005.png: unreadable or truncated PNG" in out
    assert "images/00006.png is 50x30, not 1914x1052" in out
    assert "the reader resizes both" in out


def test_check_synthia_label_formats(tmp_path):
    root = make_synthia(tmp_path / "synthia", count=2)
    assert check_dataset("synthia", root, progress=False).ok
    cv2.imwrite(str(root / "GT" / "LABELS" / "0000001.png"), np.zeros((30, 46, 3), np.uint8))
    report = check_dataset("synthia", root, progress=False)
    assert not report.ok
    assert report.problems == [f"label {root / 'GT' / 'LABELS' / '0000001.png'} is 8-bit RGB; "
                               "expected 16-bit RGB (3 channels)"]


def test_check_cityscapes_without_gtfine_and_decode(tmp_path):
    root = make_cityscapes(tmp_path / "cs", labels=False)
    report = check_dataset("cityscapes", root, progress=False)
    assert report.ok and report.num_images == 4 and report.num_labels == 0
    assert "unlabelled set" in report.notes[0]
    labelled = make_cityscapes(tmp_path / "cs2")
    (labelled / "gtFine" / "train" / "aachen" / "aachen_000001_000019_gtFine_labelIds.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    report = check_dataset("cityscapes", labelled, progress=False, decode=True)
    assert len(report.problems) == 1 and "aachen_000001_000019_gtFine_labelIds.png" in report.problems[0]


def test_check_missing_root(tmp_path):
    result = run("check", "--dataset", "synthia", "--root", tmp_path / "nope")
    assert result.exit_code == 1 and "RGB not found" in result.output


def test_list_roundtrip_and_subset(tmp_path):
    root = make_gta5(tmp_path / "gta5", count=5)
    out = tmp_path / "gta5.lst"
    result = run("list", "--dataset", "gta5", "--root", root, "--out", out)
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert lines[0] == "images/00001.png\tlabels/00001.png" and len(lines) == 5
    assert GTA5(root, list_file=out).names == GTA5(root).names
    result = run("list", "--dataset", "gta5", "--root", root, "--out", out, "--num", 3, "--seed", 1)
    assert result.exit_code == 0, result.output
    subset = GTA5(root, list_file=out).names
    assert len(subset) == 3 and subset == sorted(subset)
    assert write_dataset_list("gta5", root, tmp_path / "again.lst", num=3, seed=1) == 3
    assert (tmp_path / "again.lst").read_text() == out.read_text()
    with pytest.raises(ValueError, match="num must be"):
        write_dataset_list("gta5", root, tmp_path / "x.lst", num=9)


def test_list_cityscapes_without_labels(tmp_path):
    root = make_cityscapes(tmp_path / "cs")
    out = tmp_path / "target.lst"
    result = run("list", "--dataset", "cityscapes", "--root", root, "--out", out, "--no-labels")
    assert result.exit_code == 0, result.output
    assert out.read_text().splitlines()[0] == "leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png"
    ds = Cityscapes(root, list_file=out, with_labels=False)
    assert len(ds) == 4 and ds[0][1] is None


def test_tools_script(tmp_path):
    root = make_synthia(tmp_path / "synthia", count=1)
    proc = subprocess.run([sys.executable, str(PROJECT / "tools" / "prepare_dataset.py"), "check",
                           "--dataset", "synthia", "--root", str(root)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "16-bit RGB: 1" in proc.stdout and "problems: 0" in proc.stdout

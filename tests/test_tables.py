"""The paper's published tables as data, and the side-by-side table printer."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from mlsl_gluon.data.classes import MIOU13_CLASSES, class_names
from mlsl_gluon.evaluation import (
    ConfusionMatrix,
    format_markdown,
    format_per_class,
    format_table,
    load_paper_tables,
    our_scores,
    read_evaluation,
    table_rows,
    write_evaluation,
    write_table,
)
from mlsl_gluon.evaluation.tables import METHODS, default_tables_path

PAPER_MD = Path(__file__).resolve().parents[1].parent / "shared" / "paper" / "MLSL-paper.md"
# Per-class values carry one decimal (error <= 0.05 in their mean), the stated mIoU too.
ROUNDING = 0.1


@pytest.fixture(scope="module")
def paper():
    return load_paper_tables()


@pytest.fixture
def paper_md():
    if not PAPER_MD.is_file():
        pytest.skip(f"paper text not found at {PAPER_MD}")
    return PAPER_MD.read_text()


def _published_rows(paper):
    for table in ("table1", "table2"):
        for method, row in paper[table]["rows"].items():
            if row["iou"] is not None:
                yield table, method, row


def test_tables_have_the_expected_shape(paper):
    assert paper["table1"]["num_classes"] == 19 and paper["table2"]["num_classes"] == 16
    for table in ("table1", "table2"):
        assert tuple(paper[table]["rows"]) == METHODS
        assert len(paper[table]["columns"]) == len(class_names(paper[table]["num_classes"]))
    published = {(t, m) for t, m, _ in _published_rows(paper)}
    assert published == {(t, m) for t in ("table1", "table2")
                         for m in ("source-only", "cbst", "sisc", "sisc-pwl")}
    assert len(paper["table4"]["rows"]) == 8


def test_class_means_match_stated_miou(paper):
    """Each row's class mean is its stated mIoU (and mIoU*) within rounding, except the two
    rows flagged as the paper's own slips, which must really be off (and not by much)."""
    for table, method, row in _published_rows(paper):
        iou = np.asarray(row["iou"], dtype=np.float64)
        gap = abs(iou.mean() - row["miou"])
        if row.get("inconsistent_miou"):
            assert ROUNDING < gap < 0.25, (table, method, iou.mean())
        else:
            assert gap <= ROUNDING, (table, method, iou.mean(), row["miou"])
        if table == "table2":
            assert abs(iou[list(MIOU13_CLASSES)].mean() - row["miou13"]) <= ROUNDING, (method,)
    flagged = {(t, m) for t, m, r in _published_rows(paper) if r.get("inconsistent_miou")}
    assert flagged == {("table1", "sisc-pwl"), ("table2", "sisc")}


def _numbers(cells):
    return [float(re.sub(r"</?[bu]>", "", c)) for c in cells]


def _paper_row(text, caption, next_caption, label):
    block = text[text.index(caption): text.index(next_caption)]
    for line in block.splitlines():
        cells = [c.strip() for c in line.split("\t") if c.strip()]
        if cells and cells[0] == label:
            return _numbers(cells[2:])
    raise AssertionError(f"row {label!r} not found under {caption!r}")


def test_transcription_matches_the_paper_text(paper, paper_md):
    captions = {"table1": ("Table 1.", "Table 2."), "table2": ("Table 2.", "Table 3.")}
    for table, method, row in _published_rows(paper):
        numbers = _paper_row(paper_md, *captions[table], row["paper_row"])
        assert numbers[: len(row["iou"])] == row["iou"], (table, method)
        stated = [row["miou"]] + ([row["miou13"]] if table == "table2" else [])
        if numbers[len(row["iou"]):]:  # Table 2's source-only row lost its last cells
            assert numbers[len(row["iou"]):] == stated, (table, method)
        else:
            assert (table, method) == ("table2", "source-only")
    block = paper_md[paper_md.index("Table 4."):]
    lines = [ln.split("\t") for ln in block.splitlines()[:12] if "\t" in ln]
    checked = set()
    for header, values in zip(lines[1::2], lines[2::2]):
        param = "lambda_cls" if "lambda" in header[0] else "eta"
        for key, value in zip(header[1:], _numbers(values[1:])):
            assert paper["table4"]["rows"][f"{param}={key}"]["miou"] == value
            checked.add(f"{param}={key}")
    assert checked == set(paper["table4"]["rows"])


def test_format_table_known_answer(paper):
    sisc = np.asarray(paper["table1"]["rows"]["sisc"]["iou"]) / 100
    sisc[0] += 0.012  # road 1.2 points better than published
    text = format_table("table1", {"sisc": {"iou": list(sisc)}}, paper)
    lines = text.splitlines()
    assert lines[0].startswith("Table 1")
    assert lines[1].split()[1:] == paper["table1"]["columns"] + ["mIoU"]
    ours, theirs, diff = lines[3:6]
    assert ours.split()[:4] == ["Ours", "(SISC)", "ours", "92.2"]
    assert theirs.split()[1] == "91.0" and theirs.split()[-1] == "48.7"
    # mIoU diff: class mean + 1.2/19 minus the stated 48.7
    expected = np.mean(paper["table1"]["rows"]["sisc"]["iou"]) + 1.2 / 19 - 48.7
    assert diff.split()[1:3] == ["+1.2", "+0.0"] and diff.split()[-1] == f"{expected:+.1f}"
    assert len(lines) == 6


def test_table2_has_miou13_and_unpublished_row_shows_dashes(paper):
    iou = np.full(16, 0.5)
    iou[[3, 4, 5]] = 0.1  # wall, fence, pole: mIoU* must not see them
    rows = table_rows("table2", {"cbst-pwl": {"iou": iou}, "source-only": {"iou": iou}}, paper)
    assert [r["method"] for r in rows] == ["source-only", "cbst-pwl"]  # paper's row order
    assert rows[0]["ours"]["miou13"] == pytest.approx(50.0)
    assert rows[0]["ours"]["miou"] == pytest.approx((13 * 50 + 3 * 10) / 16)
    assert rows[0]["diff"]["miou13"] == pytest.approx(50.0 - 33.6)
    assert rows[1]["paper"] is None and rows[1]["diff"] is None
    md = format_markdown("table2", {"cbst-pwl": {"iou": iou}}, paper)
    assert md.splitlines()[2].endswith("| mIoU | mIoU* |")
    assert md.splitlines()[-1] == "|  | diff | " + " | ".join(["-"] * 18) + " |"


def test_nan_class_is_dropped_from_our_mean(paper):
    iou = [0.5] * 18 + [None]
    scores = our_scores({"iou": iou}, 19)
    assert scores["miou"] == pytest.approx(50.0)
    assert format_table("table1", {"source-only": {"iou": iou}}, paper).splitlines()[3].split()[-2] == "-"


def test_table4_and_results_from_matrices_and_run_folders(paper, tmp_path):
    cm = ConfusionMatrix(19).update(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]))
    write_evaluation(tmp_path / "run", cm, {"weights": "x.params"})
    from_dir = our_scores(tmp_path / "run", 19)
    from_cm = our_scores(cm, 19)
    np.testing.assert_allclose(from_dir["iou"], from_cm["iou"])
    assert from_dir["miou"] == pytest.approx(100 * cm.miou())
    rows = table_rows("table4", {"eta=0.05": cm, "lambda_cls=0.1": {"miou": 0.45}}, paper)
    assert [r["method"] for r in rows] == ["lambda_cls=0.1", "eta=0.05"]
    assert rows[0]["diff"]["miou"] == pytest.approx(-1.0)
    assert rows[1]["diff"]["miou"] == pytest.approx(100 * cm.miou() - 49.0)


def test_write_table(paper, tmp_path):
    iou = np.asarray(paper["table2"]["rows"]["cbst"]["iou"]) / 100
    paths = write_table(tmp_path / "tables", "table2", {"cbst": {"iou": iou}}, paper)
    record = json.loads(paths["json"].read_text())
    row = record["rows"][0]
    assert record["units"] == "percent" and row["method"] == "cbst"
    np.testing.assert_allclose(row["ours"]["iou"], paper["table2"]["rows"]["cbst"]["iou"])
    np.testing.assert_allclose(row["diff"]["iou"], 0.0, atol=1e-9)
    assert row["paper"]["miou13"] == 48.4
    assert paths["txt"].read_text() == format_table("table2", {"cbst": {"iou": iou}}, paper)
    assert paths["md"].read_text().startswith("**Table 2")


def test_bad_results_are_rejected(paper):
    with pytest.raises(ValueError, match="unknown method.*'sisc-foo'"):
        format_table("table1", {"sisc-foo": {"iou": [0.1] * 19}}, paper)
    with pytest.raises(ValueError, match="not percent"):
        format_table("table1", {"sisc": {"iou": [48.0] * 19}}, paper)
    with pytest.raises(ValueError, match="16 per-class IoU values for a 19-class"):
        format_table("table1", {"sisc": {"iou": [0.4] * 16}}, paper)
    with pytest.raises(ValueError, match="unknown table"):
        format_table("table3", {}, paper)
    with pytest.raises(ValueError, match="no evaluation result"):
        our_scores("/nonexistent/run", 19)


def test_malformed_paper_tables_name_the_file(tmp_path):
    good = yaml.safe_load(default_tables_path().read_text())
    bad = dict(good, table1=dict(good["table1"], rows=dict(good["table1"]["rows"])))
    bad["table1"]["rows"]["sisc"] = dict(bad["table1"]["rows"]["sisc"], iou=[1.0] * 18)
    path = tmp_path / "tables.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ValueError, match=r"tables.yaml: table1.sisc.iou must hold 19"):
        load_paper_tables(path)
    path.write_text(yaml.safe_dump({"table1": good["table1"]}))
    with pytest.raises(ValueError, match="tables.yaml: missing table 'table2'"):
        load_paper_tables(path)


def test_per_class_report_files(tmp_path):
    gt = np.arange(16).repeat(3)
    cm = ConfusionMatrix(16).update(gt, gt)
    summary = write_evaluation(tmp_path, cm, {"flip": True})
    record = read_evaluation(tmp_path)
    assert record["metadata"] == {"flip": True}
    assert record["class_names"][9] == "sky" and record["miou13"] == 1.0
    assert ConfusionMatrix.load(tmp_path / "confusion_matrix.json") == cm
    text = (tmp_path / "iou.txt").read_text()
    assert text == format_per_class(summary)
    assert "traffic light" in text and "mIoU* (13)" in text and "100.00" in text
    (tmp_path / "iou.json").write_text(json.dumps({"iou": [0.1], "num_classes": 16}))
    with pytest.raises(ValueError, match="iou.json: missing 'iou' list"):
        read_evaluation(tmp_path)

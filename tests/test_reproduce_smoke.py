"""`make reproduce-table1 SMOKE=1` / `reproduce-table2 SMOKE=1` end to end: tiny generated data in
the real GTA5 / SYNTHIA / Cityscapes formats, reduced width, CPU. Every step of the full targets
runs (source-only training, SI and SISC pseudo-labels, PWL, rounds, evaluation, the table), in the
released profile for every row. Table 1 also runs, as `SMOKE=1` does, the paper profile on its
source-only and SISC+PWL rows; Table 2 runs the released profile only, because the paper profile's
rows take the same code paths with 16 classes as with 19 (the overlap cost 2-3 s of the suite)."""
import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("reproduce", ROOT / "tools" / "reproduce.py")
reproduce = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reproduce)

METHODS = ("source-only", "cbst", "cbst-pwl", "sisc", "sisc-pwl")


@pytest.mark.slow
@pytest.mark.parametrize("table,source,classes,profile", [("table1", "gta5", 19, "both"),
                                                           ("table2", "synthia", 16, "released")])
def test_smoke_table(tmp_path, table, source, classes, profile, capsys):
    reproduce.main([table, "--smoke", "--out", str(tmp_path), "--profile", profile])
    printed = capsys.readouterr().out
    for method in METHODS:
        run = tmp_path / f"{source}_{method.replace('-', '_')}"
        summary = json.loads((run / "DONE").read_text())
        assert summary["method"] == method and 0.0 <= summary["miou"] <= 1.0
        iou = json.loads((run / "iou.json").read_text())
        assert iou["num_classes"] == classes
        if method != "source-only":
            assert sorted(summary["round_miou"]) == ["0", "1"]
            assert len(list((run / "round_01" / "pseudo" / "labels").rglob("*.png"))) == 4
    pseudo = json.loads((tmp_path / f"{source}_cbst" / "metrics.jsonl").read_text().splitlines()[0])
    assert pseudo["event"] == "pseudo_labels" and pseudo["stats"]["settings"]["method"] == "si"
    written = json.loads((tmp_path / f"{table}.json").read_text())
    assert written
    assert "Ours (SISC)" in printed and "paper" in printed and "mIoU" in printed
    if classes == 16:
        assert "mIoU*" in printed
    released_run = tmp_path / f"{source}_sisc_pwl"
    resolved = yaml.safe_load((released_run / "config.yaml").read_text())
    assert (resolved["experiment"]["profile"], resolved["train"]["lambda_cls"],
            resolved["train"]["loss_normalization"]) == ("released", 0.04, "valid_pixels_per_device_batch")
    resumed = [tmp_path / f"{source}_sisc"]
    if profile == "both":
        # The paper profile's rows, with the values the profile sets in their resolved configs.
        assert printed.index("Profile: released") < printed.index("Profile: paper")
        paper_run = tmp_path / "paper" / f"{source}_sisc_pwl"
        assert json.loads((paper_run / "DONE").read_text())["method"] == "sisc-pwl"
        assert (tmp_path / "paper" / f"{table}.json").is_file()
        assert not (tmp_path / "paper" / f"{source}_sisc").exists()
        resolved = yaml.safe_load((paper_run / "config.yaml").read_text())
        assert (resolved["experiment"]["profile"], resolved["train"]["lambda_cls"],
                resolved["train"]["loss_normalization"]) == ("paper", 0.025, "per_image")
        resumed.append(paper_run)
    else:
        assert "Profile: paper" not in printed and not (tmp_path / "paper").exists()
    lines = (tmp_path / f"{source}_sisc" / "metrics.jsonl").read_text().splitlines()
    hard = [json.loads(line) for line in lines if json.loads(line)["event"] == "hard_classes"]
    assert [h["round"] for h in hard] == [0, 1] and all(len(h["ids"]) >= 3 for h in hard)
    # A second invocation resumes: every row is finished, nothing is recomputed.
    stamps = [(run / "metrics.jsonl").stat().st_mtime_ns for run in resumed]
    reproduce.main([table, "--smoke", "--out", str(tmp_path), "--profile", profile])
    assert [(run / "metrics.jsonl").stat().st_mtime_ns for run in resumed] == stamps


def test_make_targets_call_the_driver():
    dry = subprocess.run(["make", "-n", "reproduce-table2", "SMOKE=1"], cwd=ROOT, capture_output=True,
                         text=True)
    assert dry.returncode == 0, dry.stderr
    assert "tools/reproduce.py table2 --out runs/table2-smoke" in dry.stdout and "--smoke" in dry.stdout
    assert "--profile both" in dry.stdout
    paper = subprocess.run(["make", "-n", "reproduce-table1", "DATA_ROOT=/d", "WEIGHTS_DIR=/w"], cwd=ROOT,
                           capture_output=True, text=True, env={**os.environ, "PROFILE": "paper"})
    assert "--profile paper" in paper.stdout
    full = subprocess.run(["make", "-n", "reproduce-table1", "DATA_ROOT=/d", "WEIGHTS_DIR=/w"], cwd=ROOT,
                          capture_output=True, text=True)
    assert '--data-root "/d" --weights-dir "/w"' in full.stdout and "--profile released" in full.stdout
    missing = subprocess.run(["make", "-n", "reproduce-table1"], cwd=ROOT, capture_output=True, text=True)
    assert missing.returncode != 0 and "DATA_ROOT" in missing.stderr
    assert "--kvstore" not in full.stdout
    host_b = ["KVSTORE=dist_sync", "DIST_SCHEDULER=10.0.0.1:9091", "DIST_WORKERS=2", "DIST_HOST=10.0.0.2"]
    dist = subprocess.run(["make", "-n", "reproduce-table1", "DATA_ROOT=/d", "WEIGHTS_DIR=/w"] + host_b,
                          cwd=ROOT, capture_output=True, text=True)
    assert "--kvstore dist_sync --scheduler 10.0.0.1:9091 --workers 2 --node-host 10.0.0.2" in dist.stdout
    assert "--serve" not in dist.stdout
    host_a = subprocess.run(["make", "-n", "reproduce-table1", "SMOKE=1", "DIST_SERVE=1",
                             "DIST_LOCAL_WORKERS=2"] + host_b, cwd=ROOT, capture_output=True, text=True)
    assert "--local-workers 2 --node-host 10.0.0.2 --serve" in host_a.stdout
    with pytest.raises(SystemExit):  # a cluster needs the scheduler's address and its size
        reproduce.main(["table1", "--smoke", "--out", "/nonexistent", "--kvstore", "dist_sync",
                        "--workers", "2"])


def test_every_table_row_has_an_experiment_file_and_a_paper_row():
    from mlsl_gluon.evaluation.tables import load_paper_tables

    paper = load_paper_tables()
    for table in ("table1", "table2", "table4"):
        rows = reproduce.table_rows(table)
        assert set(rows) == set(paper[table]["rows"])
        for stem in rows.values():
            assert (ROOT / "experiments" / f"{stem}.yaml").is_file(), stem

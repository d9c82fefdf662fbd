"""The built-in demo end to end at its tiny preset (the accuracy is not tested, the outputs are)."""
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from mlsl_gluon.cli import main
from mlsl_gluon.data.classes import LABEL_ID_TO_TRAIN_ID
from mlsl_gluon.demo.presets import FULL, TINY, demo_config
from mlsl_gluon.demo.table import format_demo_table

KEYS = ("source_only", "cbst", "sisc", "sisc_pwl")


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    result = CliRunner().invoke(main, ["demo", "--out", str(out), "--preset", "tiny", "--seed", "5",
                                       "--no-progress"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return out, result.output


@pytest.mark.slow
def test_tiny_demo_writes_results_table_and_pictures(tiny_demo):
    out, output = tiny_demo
    results = json.loads((out / "results.json").read_text())
    for key in KEYS:
        assert 0.0 <= results[key] <= 100.0 and math.isfinite(results[key]), key
        assert len(results["per_class"][key]) == 19
    for key in KEYS[1:]:
        rounds = results["per_round"][key]
        assert len(rounds) == TINY.num_rounds and all(0.0 <= v <= 100.0 for v in rounds)
        # The method's final mIoU is its last round's.
        assert rounds[-1] == pytest.approx(results[key])
    assert results["seed"] == 5 and results["elapsed_s"] > 0
    # Each method really ran in its own run folder with its own config.
    for key, method in zip(KEYS, ("source-only", "cbst", "sisc", "sisc-pwl")):
        assert f"method: {method}" in (out / key / "config.yaml").read_text()
        assert (out / key / "DONE").is_file()
    last = f"round_{TINY.num_rounds - 1:02d}"
    assert (out / "sisc_pwl" / last / "pseudo" / "weak_labels.json").is_file()  # PWL ran
    assert len(list((out / "sisc" / last / "pseudo" / "labels").rglob("*.png"))) == TINY.n_target_train
    # The adaptation never had target-train labels under the data root it read; the truth the
    # measurements use lies beside it, one file per target-train frame.
    data_root = (out / "data").resolve()
    assert not (data_root / "Cityscapes" / "gtFine" / "train").exists()
    truth = sorted((out / "truth").rglob("*_gtFine_labelIds.png"))
    assert len(truth) == TINY.n_target_train
    assert all(data_root not in path.resolve().parents for path in truth)
    # The mechanism measurements: one share in [0, 1] per round for each method.
    for name in ("pseudo_label_precision", "pseudo_label_coverage"):
        assert set(results[name]) >= {"cbst", "sisc", "sisc_pwl"}, name
        for values in results[name].values():
            assert len(values) == TINY.num_rounds and all(0.0 <= v <= 1.0 for v in values), (name, values)
    for name in ("weak_label_accuracy", "branch_accuracy"):
        values = results[name]["sisc_pwl"]
        assert len(values) == TINY.num_rounds and all(0.0 <= v <= 1.0 for v in values), name
    assert len(results["classification_loss"]["sisc_pwl"]) == TINY.num_rounds
    # Round 0 of SI on the SISC run's networks is CBST's round 0: same source model, SI, portion.
    for name in ("pseudo_label_precision", "pseudo_label_coverage"):
        assert results[name]["si_same_network"][0] == pytest.approx(results[name]["cbst"][0])
    per_class = results["pseudo_label_per_class"]["sisc"][0]
    assert len(per_class["precision"]) == len(per_class["coverage"]) == 19
    # Recomputed here from the files: round 0 of CBST, pixels with a true class only.
    pseudo_root = out / "cbst" / "round_00" / "pseudo" / "labels"
    right = selected = counted = 0
    for path in truth:
        true_ids = LABEL_ID_TO_TRAIN_ID[np.array(Image.open(path))]
        name = path.relative_to(out / "truth").as_posix().replace("_gtFine_labelIds.png", ".png")
        label = np.array(Image.open(pseudo_root / name))
        valid = true_ids != 255
        right += int(((label == true_ids) & valid).sum())
        selected += int(((label != 255) & valid).sum())
        counted += int(valid.sum())
    assert results["pseudo_label_coverage"]["cbst"][0] == pytest.approx(selected / counted)
    assert results["pseudo_label_precision"]["cbst"][0] == pytest.approx(right / selected)

    for line in ("Source only", "CBST (SI)", "SISC", "SISC+PWL", "mIoU"):
        assert line in output
    assert (out / "table.txt").read_text() in output

    grid = np.array(Image.open(results["pictures"]["grid"]))
    height, width = TINY.size
    assert grid.ndim == 3 and grid.shape[2] == 3
    assert grid.shape[1] == 2 * 5 * (width + 4)  # five columns, 2x upscaled
    assert grid.shape[0] > 2 * 3 * height  # three frames plus a header
    assert grid.std() > 10  # not a blank image
    for picture in ("miou_per_round", "mechanisms"):
        plot = Image.open(results["pictures"][picture])
        assert plot.format == "PNG" and plot.size[0] >= 300
    assert "precision / coverage" in output and "PWL accuracy" in output


@pytest.mark.slow
def test_rerun_other_seed_same_folder_is_refused(tiny_demo):
    out, _ = tiny_demo
    result = CliRunner().invoke(main, ["demo", "--out", str(out), "--preset", "tiny", "--seed", "6"])
    assert result.exit_code != 0
    assert "seed 5" in result.output and "another --out" in result.output


def test_demo_configs_are_valid_and_differ_only_by_method():
    configs = {m: demo_config(FULL, m, 0) for m in ("source-only", "cbst", "sisc", "sisc-pwl")}
    assert configs["cbst"].pseudo_label_method == "si" and configs["sisc"].pseudo_label_method == "sisc"
    assert configs["sisc-pwl"].use_pwl and not configs["sisc"].use_pwl
    assert configs["source-only"].model.freeze_bn is False and configs["sisc"].model.freeze_bn is True
    assert configs["sisc"].data.gta5_frame_size is None
    # Same training budget for every adaptation method: only the method decides the result.
    for m in ("cbst", "sisc-pwl"):
        assert configs[m].train.batch_size == configs["sisc"].train.batch_size
        assert configs[m].rounds == configs["sisc"].rounds
    assert configs["sisc"].pseudo_label.patch_size * 2 == FULL.size[0]


def test_table_shows_present_classes_and_gain():
    nan_row = [None] * 19
    per_class = {k: list(nan_row) for k in KEYS}
    for k, v in zip(KEYS, (10.0, 20.0, 30.0, 40.0)):
        per_class[k][0] = v  # road
        per_class[k][13] = v / 2  # car
    results = {"seed": 0, "class_names": [f"c{i}" for i in range(19)], "per_class": per_class,
               "source_only": 7.5, "cbst": 15.0, "sisc": 22.5, "sisc_pwl": 30.0}
    results["class_names"][0], results["class_names"][13] = "road", "car"
    table = format_demo_table(results)
    lines = table.splitlines()
    assert "Road" in lines[1] and "Car" in lines[1] and "c1" not in lines[1]
    assert lines[-1].split()[-1] == "+22.5" and lines[-1].startswith("SISC+PWL")


def _demo_seeds_tool():
    path = Path(__file__).parents[1] / "tools" / "demo_seeds.py"
    spec = importlib.util.spec_from_file_location("demo_seeds", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_seeds_parses_seeds_and_reports_mean_and_std():
    tool = _demo_seeds_tool()
    assert tool.parse_seeds("0-4") == [0, 1, 2, 3, 4] and tool.parse_seeds("0,2,5-6") == [0, 2, 5, 6]
    with pytest.raises(SystemExit):
        tool.parse_seeds("1,1")

    def fake(seed, base):
        shares = {k: [0.5 + 0.1 * seed, 0.6] for k in ("cbst", "si_same_network", "sisc", "sisc_pwl")}
        branch = {"sisc_pwl": [0.8, 0.9]}
        return {"source_only": base, "cbst": base + 2, "sisc": base + 3, "sisc_pwl": base + 6 + seed,
                "pseudo_label_precision": shares, "pseudo_label_coverage": shares,
                "weak_label_accuracy": branch, "branch_accuracy": branch,
                "classification_loss": {"sisc_pwl": [0.7, 0.5]},
                "target_classification_loss": {"sisc_pwl": [0.7, 0.4]}, "elapsed_s": 60.0}

    per_seed = {0: fake(0, 10.0), 1: fake(1, 14.0)}
    summary = tool.aggregate(per_seed)
    mean, std = summary["miou"]["source_only"]
    assert mean == pytest.approx(12.0) and std == pytest.approx(np.std([10.0, 14.0], ddof=1))
    assert summary["gain_over_source_only"]["sisc_pwl"][0] == pytest.approx(6.5)
    assert summary["pseudo_label_precision"]["sisc"][0][0] == pytest.approx(0.55)
    goals = summary["goals"]
    assert goals["ranking_pwl_ge_sisc_ge_cbst_gt_source"] and goals["gain_ge_5_every_seed"]
    assert goals["classification_loss_below_ln2"] and goals["min_gain_pwl_over_source_only"] == 6.0
    report = tool.markdown(per_seed, {0: 61.0, 1: None}, summary)
    assert "| 0 | 10.0 | 12.0 | 13.0 | 16.0 | +6.0 | 61 |" in report
    assert "| mean ± std | 12.0 ± 2.8 |" in report

"""One settings object per step: `pseudo-label` and `train` resolve the same settings from the
same config, and a round made by either (whole or in shards) is reused by the other."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import mlsl_gluon.pseudo_labels as pseudo_labels
import mlsl_gluon.pseudo_labels.round as pseudo_round
import mlsl_gluon.training.experiment as experiment
from mlsl_gluon.cli import main, pseudo_cmds
from mlsl_gluon.config import METHODS, SOURCES, load_config, pseudo_label_settings, to_dict, train_settings
from mlsl_gluon.pseudo_labels import save_source_stats

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("reproduce", ROOT / "tools" / "reproduce.py")
reproduce = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reproduce)

ROUND_METHODS = [m for m in METHODS if m != "source-only"]


def _set_args(overrides):
    return [a for s in overrides for a in ("--set", s)]


def _count_inference(monkeypatch):
    """Count every network pass of step 1 (SISC and SI)."""
    calls = []
    for name in ("sisc_inference", "single_inference_many"):
        real = getattr(pseudo_round, name)
        monkeypatch.setattr(pseudo_round, name, lambda *a, _real=real, **k: calls.append(1) or _real(*a, **k))
    return calls


def _round_files(folder):
    """Every label PNG and the weak labels of a round folder, as bytes."""
    files = sorted(folder.joinpath("labels").rglob("*.png")) + [folder / "weak_labels.json"]
    return {str(p.relative_to(folder)): p.read_bytes() for p in files}


@pytest.fixture(scope="module")
def gta5_inputs(tmp_path_factory):
    """Tiny GTA5 + Cityscapes data, a random CBST-style source model and its source statistics."""
    from mlsl_gluon.data import GTA5
    from mlsl_gluon.demo.synthetic import generate_demo_data
    from mlsl_gluon.pseudo_labels.source_stats import write_source_stats

    root = tmp_path_factory.mktemp("settings")
    generate_demo_data(root / "data", seed=0, source_format="gta5", **reproduce.SMOKE_DATA)
    weights = reproduce.write_random_ademxapp_weights(root / "gta_rna-a1_cls19_s8_ep-0000.params", 19,
                                                      0.0625, seed=1, with_head=True)
    stats = root / "source_stats.npz"
    write_source_stats(str(stats), GTA5(root / "data" / "GTA5", frame_size=None))
    return root, weights, stats


def test_pseudo_label_shards_are_reused_by_train_and_train_rounds_by_pseudo_label(gta5_inputs, monkeypatch):
    root, weights, stats = gta5_inputs
    data, run = root / "data", root / "run"
    # gta5 sisc-pwl: SISC patches, weak labels and (from the preset, not an option) the spatial prior.
    overrides = reproduce.SMOKE_SIZES + ["rounds.num_rounds=1", "eval.enabled=false",
                                         f"pseudo_label.source_stats={stats}"]
    common = ["--source", "gta5", "--method", "sisc-pwl"] + _set_args(overrides)
    pseudo = ["pseudo-label", "--weights", str(weights), "--data-root", str(data / "Cityscapes"),
              "--round", "0", "--out", str(run / "round_00" / "pseudo"),
              "--source-stats", str(stats)] + common
    for shard in ("0/2", "1/2"):
        result = CliRunner().invoke(main, pseudo + ["--shard", shard])
        assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, pseudo + ["--combine", "--shard", "0/2"])
    assert result.exit_code == 0, result.output
    folder = run / "round_00" / "pseudo"
    made_by_cli = _round_files(folder)
    cli_stats = json.loads((folder / "stats.json").read_text())
    assert len(made_by_cli) == 4 + 1 and cli_stats["num_shards"] == 2
    assert cli_stats["settings"]["prior_digest"] != ""  # the gta5 preset's spatial prior was used

    calls = _count_inference(monkeypatch)
    result = CliRunner().invoke(main, ["train", "--data-root", str(data), "--weights", str(weights),
                                       "--out", str(run), "--no-progress"] + common)
    assert result.exit_code == 0, result.output
    assert calls == []  # train segmented no target image: the CLI's round was reused
    assert _round_files(folder) == made_by_cli
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["stats"] for e in logged if e["event"] == "pseudo_labels"] == [cli_stats]
    assert [e["images"] for e in logged if e["event"] == "epoch"] == [4 + 2]  # trained on those labels

    # And the other way: pseudo-label on train's round folder finds the round done.
    result = CliRunner().invoke(main, pseudo)
    assert result.exit_code == 0, result.output
    assert calls == [] and json.loads(result.output) == cli_stats


def _write_stats(path, num_classes):
    rng = np.random.default_rng(0)
    prior = rng.random((num_classes, 4, 8)).astype(np.float32)
    save_source_stats(str(path), rng.random(num_classes), prior / prior.sum(0), num_classes=num_classes,
                      grid=(4, 8), alpha=1.0, num_images=1)
    return path


class _Net:
    def __init__(self, num_classes):
        self.num_classes = num_classes


def test_cli_defaults_are_the_config_defaults_of_every_source_and_method(tmp_path, monkeypatch):
    # Every option that sets a config field is unset by default, so the config decides.
    options = {p.name: p for p in pseudo_cmds.pseudo_label_command.params}
    assert all(options[name].default is None for name in pseudo_cmds.CONFIG_OPTIONS)
    weights = tmp_path / "w.params"
    weights.write_bytes(b"weights")
    stats = {c: _write_stats(tmp_path / f"stats{c}.npz", c) for c in (16, 19)}
    captured = {}
    classes = {}

    def fake_round(net, dataset, folder, *, portion, settings, source_stats, **rest):
        captured["pseudo-label"] = (settings, portion, folder.cache_path)
        return {}

    monkeypatch.setattr(pseudo_labels, "run_pseudo_label_round", fake_round)
    monkeypatch.setattr(pseudo_cmds, "load_segmentation_network",
                        lambda *a, **k: (_Net(classes["n"]), {"num_classes": classes["n"]}))
    monkeypatch.setattr(pseudo_cmds, "open_cityscapes", lambda *a, **k: None)
    monkeypatch.setattr(experiment, "run_experiment",
                        lambda config, *a, **k: captured.__setitem__("train", config) or {"miou": None})
    for source in SOURCES:
        for method in METHODS:
            config = load_config(source=source, method=method)
            result = CliRunner().invoke(main, ["train", "--source", source, "--method", method, "--data-root",
                                               str(tmp_path), "--weights", str(weights), "--out",
                                               str(tmp_path / "run")])
            assert result.exit_code == 0, result.output
            assert to_dict(captured["train"]) == to_dict(config)
            assert train_settings(captured["train"]) == train_settings(config)
            if method == "source-only":
                continue
            classes["n"] = config.num_classes
            result = CliRunner().invoke(main, [
                "pseudo-label", "--source", source, "--method", method, "--weights", str(weights),
                "--data-root", str(tmp_path), "--round", "3", "--out", str(tmp_path / "round"),
                "--source-stats", str(stats[config.num_classes])])
            assert result.exit_code == 0, result.output
            settings, portion, cache = captured["pseudo-label"]
            expected = pseudo_label_settings(config)
            assert settings == expected and settings == pseudo_label_settings(captured["train"])
            assert portion == expected.portion(3) == config.pseudo_label.portion_start + 3 * 0.05
            assert cache == str(tmp_path / "round" / "probabilities.h5")
            assert settings.spatial_prior == (source == "gta5")  # CBST's GTA5 setting, as `train`
    # A given option wins over the config.
    classes["n"] = 19
    target = ["--weights", str(weights), "--data-root", str(tmp_path), "--round", "0",
              "--out", str(tmp_path / "r")]
    result = CliRunner().invoke(main, ["pseudo-label", "--method", "sisc", "--no-spatial-prior", "--K", "7",
                                       "--portion", "0.4"] + target)
    assert result.exit_code == 0, result.output
    settings, portion, _ = captured["pseudo-label"]
    assert (settings.K, settings.spatial_prior, portion) == (7, False, 0.4)
    # Without --source-stats the preset's prior / weak labels cannot be made: said so.
    result = CliRunner().invoke(main, ["pseudo-label"] + target)
    assert result.exit_code != 0 and "need --source-stats" in result.output

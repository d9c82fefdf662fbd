"""Config: paper defaults, presets, strict YAML / --set overrides, every experiments/*.yaml."""
import dataclasses
import math
from pathlib import Path

import pytest

from mlsl_gluon.config import (
    Config,
    ConfigError,
    config_differences,
    dump_config,
    load_config,
    source_portion,
    target_portion,
)

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
EXPERIMENT_FILES = sorted(p for p in EXPERIMENTS.glob("*.yaml") if p.name != "paper_tables.yaml")


def test_paper_profile_defaults_are_the_paper():
    c = load_config(overrides=["experiment.profile=paper"])
    assert (c.rounds.num_rounds, c.rounds.epochs_per_round) == (6, 2)
    assert c.train.lr == 1e-4 and c.train.lambda_cls == 0.025 and c.pseudo_label.eta == 0.05
    assert (c.pseudo_label.K, c.pseudo_label.patch_size, c.data.crop_size) == (50, 512, 504)
    assert c.experiment.method == "sisc-pwl" and c.train.batch_size == 1 and c.use_pwl
    assert c.source_only.lr == 0.0016 and c.source_only.batch_size == 16


def test_every_field_has_a_comment():
    source = (Path(__file__).resolve().parents[1] / "mlsl_gluon" / "config.py").read_text().splitlines()
    for section in dataclasses.fields(Config):
        for f in dataclasses.fields(section.default_factory()):
            at = next(i for i, s in enumerate(source) if s.strip().startswith(f"{f.name}:"))
            # A long field definition may wrap: the comment then ends its last line.
            assert "  # " in source[at] or "  # " in source[at + 1], f"{section.name}.{f.name} has no comment"


def test_portions_schedule():
    assert [round(target_portion(r), 4) for r in range(8)] == [0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5]
    assert target_portion(20) == 0.5
    assert math.isclose(source_portion(0), 0.03) and math.isclose(source_portion(4), 0.04)
    assert source_portion(100) == 0.06


@pytest.mark.parametrize("method,batch,pwl,pl", [("sisc", 2, False, "sisc"), ("sisc-pwl", 1, True, "sisc"),
                                                 ("cbst", 2, False, "si"), ("cbst-pwl", 1, True, "si")])
def test_method_presets(method, batch, pwl, pl):
    c = load_config(source="gta5", method=method)
    assert (c.train.batch_size, c.use_pwl, c.pseudo_label_method) == (batch, pwl, pl)
    assert c.pseudo_label.spatial_prior and c.num_classes == 19
    s = load_config(source="synthia", method=method)
    assert not s.pseudo_label.spatial_prior and s.num_classes == 16 and s.source_only.epochs == 50


def test_set_overrides_and_types():
    c = load_config(overrides=["train.lr=5e-5", "pseudo_label.K=3", "data.gta5_frame_size=null",
                               "eval.scales=[0.5, 1]", "train.cls_loss_scale_released=0.04"])
    assert c.train.lr == 5e-5 and isinstance(c.train.lr, float)
    assert c.pseudo_label.K == 3 and c.data.gta5_frame_size is None and c.eval.scales == [0.5, 1.0]
    assert c.train.cls_loss_scale_released == 0.04
    with pytest.raises(ConfigError, match="train.lr: expected a number"):
        load_config(overrides=["train.lr=fast"])
    with pytest.raises(ConfigError, match="pseudo_label.K: expected an integer"):
        load_config(overrides=["pseudo_label.K=2.5"])
    with pytest.raises(ConfigError, match="unknown key train.lrr"):
        load_config(overrides=["train.lrr=1"])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(overrides=["lr=1"])
    with pytest.raises(ConfigError, match="experiment.method must be one of"):
        load_config(overrides=["experiment.method=fancy"])


def test_yaml_strictness_names_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lamda_cls: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown key train.lamda_cls"):
        load_config(bad)
    bad.write_text("trian:\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown section 'trian'"):
        load_config(bad)
    bad.write_text("data:\n  flip: 'yes'\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: data.flip: expected true/false"):
        load_config(bad)
    bad.write_text("data:\n  crop_size: 500\n")
    with pytest.raises(ConfigError, match="multiple of 8"):
        load_config(bad)
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_cli_source_must_agree_with_file():
    with pytest.raises(ConfigError, match="experiment.source is 'gta5' but --source 'synthia'"):
        load_config(EXPERIMENTS / "gta5_sisc.yaml", source="synthia")


def test_yaml_wins_over_preset_and_set_wins_over_yaml(tmp_path):
    f = tmp_path / "x.yaml"
    f.write_text("experiment:\n  method: sisc\ntrain:\n  batch_size: 4\n")
    assert load_config(f).train.batch_size == 4
    assert load_config(f, ["train.batch_size=3"]).train.batch_size == 3


def test_dump_round_trip_and_differences(tmp_path):
    c = load_config(EXPERIMENTS / "ablation_eta_0.1.yaml", ["model.width=0.25"])
    dump_config(c, tmp_path / "c.yaml")
    back = load_config(tmp_path / "c.yaml")
    assert back == c and config_differences(back, c) == []
    other = load_config(EXPERIMENTS / "ablation_eta_0.1.yaml")
    assert config_differences(c, other) == ["model.width: 0.25 != 1.0"]


def test_experiment_files_cover_tables():
    names = {p.stem for p in EXPERIMENT_FILES}
    for source in ("gta5", "synthia"):
        for method in ("source_only", "cbst", "cbst_pwl", "sisc", "sisc_pwl"):
            assert f"{source}_{method}" in names
    for value in ("0.1", "0.05", "0.025", "0.001"):
        assert f"ablation_lambda_cls_{value}" in names
    for value in ("0.0", "0.1", "0.05", "0.025"):
        assert f"ablation_eta_{value}" in names


@pytest.mark.parametrize("path", EXPERIMENT_FILES, ids=lambda p: p.stem)
def test_every_experiment_file_loads(path):
    c = load_config(path)
    assert c.experiment.name == path.stem
    if path.stem.startswith(("gta5_", "synthia_")):
        source, _, method = path.stem.partition("_")
        assert c.experiment.source == source and c.experiment.method == method.replace("_", "-")
    if path.stem.startswith("ablation_lambda_cls_"):
        assert c.train.lambda_cls == float(path.stem.rsplit("_", 1)[1]) and c.use_pwl
    if path.stem.startswith("ablation_eta_"):
        assert c.pseudo_label.eta == float(path.stem.rsplit("_", 1)[1]) and c.use_pwl


def test_set_cannot_contradict_cli_source():
    with pytest.raises(ConfigError, match="contradicts --source gta5"):
        load_config(overrides=["experiment.source=synthia"], source="gta5")

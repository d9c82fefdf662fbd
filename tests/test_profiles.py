"""`experiment.profile` (released | paper): every field it sets, against a hand-written table;
an individual override beats it; it reaches the objects that use it; hard-class selection."""
import dataclasses
import importlib.util
import json
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest
from click.testing import CliRunner

from mlsl_gluon.cli import main
from mlsl_gluon.cli.pseudo_cmds import _config_of
from mlsl_gluon.config import (
    ConfigError,
    LossSettings,
    dump_config,
    load_config,
    pseudo_label_settings,
    train_settings,
)
from mlsl_gluon.data import normalize
from mlsl_gluon.profiles import PROFILE_FIELDS
from mlsl_gluon.pseudo_labels import run_pseudo_label_round
from mlsl_gluon.pseudo_labels.round import RoundFolder
from mlsl_gluon.training.hard_classes import select_hard_classes
from mlsl_gluon.training.network import build_network
from mlsl_gluon.training.rounds import round_hard_classes
from mlsl_gluon.training.stage import train_transform

ROOT = Path(__file__).resolve().parents[1]
ADAPTATION = ("cbst", "cbst-pwl", "sisc", "sisc-pwl")

# What each profile sets, written out by hand from SPEC section 9 and docs/ARCHITECTURE.md.
EXPECTED = {
    "released": {"model.cls_head": "released", "model.cls_init": "msra",
                 "train.loss_normalization": "valid_pixels_per_device_batch", "train.lambda_cls": 0.04,
                 "pseudo_label.K": 25, "pseudo_label.threshold_sampling_released": True,
                 "pseudo_label.per_crop_weak_labels_released": True, "data.hard_class_mining_released": True},
    "paper": {"model.cls_head": "paper", "model.cls_init": "normal", "train.loss_normalization": "per_image",
              "train.lambda_cls": 0.025, "pseudo_label.K": 50,
              "pseudo_label.threshold_sampling_released": False,
              "pseudo_label.per_crop_weak_labels_released": False, "data.hard_class_mining_released": False},
}
# OHEM: the released SISC command only (solve_ST1.py L448); never in the paper profile.
EXPECTED_OHEM = {("released", "cbst"): False, ("released", "cbst-pwl"): False, ("released", "sisc"): True,
                 ("released", "sisc-pwl"): False, ("paper", "cbst"): False, ("paper", "cbst-pwl"): False,
                 ("paper", "sisc"): False, ("paper", "sisc-pwl"): False}


def value(config, name):
    section, key = name.split(".")
    return getattr(getattr(config, section), key)


def test_the_table_covers_every_profile_field():
    assert set(PROFILE_FIELDS) == set(EXPECTED["released"]) | {"train.ohem_released"}
    assert set(EXPECTED["released"]) == set(EXPECTED["paper"])


@pytest.mark.parametrize("method", ADAPTATION)
@pytest.mark.parametrize("profile", ["released", "paper"])
def test_every_field_flips_with_the_profile(profile, method):
    config = load_config(overrides=[f"experiment.profile={profile}"], method=method)
    for name, expected in EXPECTED[profile].items():
        assert value(config, name) == expected, name
    assert config.train.ohem_released is EXPECTED_OHEM[profile, method]


def test_released_is_the_default_profile():
    config = load_config(method="sisc")
    assert config.experiment.profile == "released"
    assert {name: value(config, name) for name in EXPECTED["released"]} == EXPECTED["released"]
    assert config.train.ohem_released is True


# An override of every field, against each profile: (value in the released run, in the paper run).
OTHER = {"model.cls_head": ("paper", "released"), "model.cls_init": ("normal", "msra"),
         "train.loss_normalization": ("per_image", "valid_pixels_per_device_batch"),
         "train.lambda_cls": (0.1, 0.1), "train.ohem_released": (False, True), "pseudo_label.K": (7, 7),
         "pseudo_label.threshold_sampling_released": (False, True),
         "pseudo_label.per_crop_weak_labels_released": (False, True),
         "data.hard_class_mining_released": (False, True)}


@pytest.mark.parametrize("profile", ["released", "paper"])
def test_an_individual_override_beats_the_profile(profile, tmp_path):
    for name, given in OTHER.items():
        wanted = given[0] if profile == "released" else given[1]
        text = str(wanted).lower() if isinstance(wanted, bool) else wanted
        config = load_config(overrides=[f"experiment.profile={profile}", f"{name}={text}"], method="sisc")
        assert value(config, name) == wanted, name
        # null asks for the profile's value again.
        config = load_config(overrides=[f"experiment.profile={profile}", f"{name}=null"], method="sisc")
        assert value(config, name) == EXPECTED[profile].get(name, EXPECTED_OHEM[profile, "sisc"])
    # A file's value beats the profile the command line chooses.
    path = tmp_path / "k.yaml"
    path.write_text("pseudo_label:\n  K: 50\n")
    assert load_config(path, options={"experiment": {"profile": "released"}}).pseudo_label.K == 50


def test_resolved_config_shows_the_values_and_reloads_equal(tmp_path):
    config = load_config(overrides=["experiment.profile=paper"], method="sisc-pwl")
    dump_config(config, tmp_path / "config.yaml")
    text = (tmp_path / "config.yaml").read_text()
    assert "lambda_cls: 0.025" in text and "cls_head: paper" in text and "K: 50" in text
    again = load_config(tmp_path / "config.yaml")
    assert again == config


def test_unknown_profile_or_choice_is_an_error():
    with pytest.raises(ConfigError, match="experiment.profile must be one of"):
        load_config(overrides=["experiment.profile=authors"])
    with pytest.raises(ConfigError, match="model.cls_head must be one of"):
        load_config(overrides=["model.cls_head=relu"])


@pytest.mark.parametrize("profile", ["released", "paper"])
def test_settings_objects_carry_the_profile(profile):
    sisc = load_config(overrides=[f"experiment.profile={profile}"], method="sisc")
    pwl = load_config(overrides=[f"experiment.profile={profile}"], method="sisc-pwl")
    norm = EXPECTED[profile]["train.loss_normalization"]
    lam = EXPECTED[profile]["train.lambda_cls"]
    ohem = profile == "released"
    assert train_settings(sisc).loss == LossSettings(use_cls=False, lambda_cls=lam, ohem=ohem,
                                                     cls_loss_scale=None, normalization=norm)
    assert train_settings(pwl).loss == LossSettings(use_cls=True, lambda_cls=lam, ohem=False,
                                                    cls_loss_scale=None, normalization=norm)
    settings = pseudo_label_settings(sisc)
    assert (settings.K, settings.released_sampling) == ({"released": 25, "paper": 50}[profile],
                                                        profile == "released")


def test_cli_profile_options_reach_the_config(monkeypatch, tmp_path):
    given = dict(profile="paper", K=None, patch_size=None, seed=None, flip=None, include_si=None,
                 aggregation=None, batch_size=None, longer_side=None, spatial_prior=None, eta=None)
    assert pseudo_label_settings(_config_of(None, (), "gta5", "sisc", given)).K == 50
    assert pseudo_label_settings(_config_of(None, (), "gta5", "sisc", dict(given, K=7))).K == 7
    import mlsl_gluon.training.experiment as experiment

    seen = []
    monkeypatch.setattr(experiment, "run_experiment", lambda config, *a, **k: seen.append(config) or {})
    result = CliRunner().invoke(main, ["train", "--method", "sisc", "--data-root", str(tmp_path), "--weights",
                                       str(tmp_path / "w.params"), "--out", str(tmp_path / "run"),
                                       "--profile", "paper", "--set", "pseudo_label.K=9"])
    assert result.exit_code == 0, result.output
    assert (seen[0].experiment.profile, seen[0].train.loss_normalization, seen[0].pseudo_label.K) == \
        ("paper", "per_image", 9)


def _write_source_model(path):
    spec = importlib.util.spec_from_file_location("reproduce", ROOT / "tools" / "reproduce.py")
    reproduce = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reproduce)
    return reproduce.write_random_ademxapp_weights(path, 16, 0.0625, seed=1, with_head=True)


def test_built_network_has_the_profiles_branch(tmp_path):
    weights = _write_source_model(tmp_path / "synthia_rna-a1_cls16_s8_ep-0000.params")
    stds = {}
    for profile in ("released", "paper"):
        config = load_config(overrides=[f"experiment.profile={profile}", "model.width=0.0625"],
                             source="synthia", method="sisc-pwl")
        net, _ = build_network(config, [mx.cpu()], weights)
        assert net.cls_branch.variant == profile
        stds[profile] = float(net.cls_branch.fc2.weight.data().asnumpy().std())
    # FC-C: MSRA over its 32 inputs (std sqrt(2 / 32) = 0.25) in the released code, N(0, 0.01) in ours.
    assert stds["released"] == pytest.approx(0.25, rel=0.15)
    assert stds["paper"] == pytest.approx(0.01, rel=0.15)


class ChannelNet:
    """Stand-in network: the class of a pixel is its largest normalised colour channel."""

    num_classes = 3

    def predict(self, x, flip=False):
        return mx.nd.softmax(x * 8, axis=1)


class Images:
    num_classes = 3

    def __init__(self):
        rng = np.random.default_rng(5)
        self.images = [rng.integers(0, 256, size=(9, 13, 3), dtype=np.uint8) for _ in range(3)]
        self.images[1][..., 2] = 0  # class 2 rarer in image 1
        self.names = [f"img{i}" for i in range(3)]

    def __len__(self):
        return 3

    def __getitem__(self, i):
        return self.images[i], None, self.names[i]


@pytest.mark.parametrize("profile", ["released", "paper"])
def test_a_round_samples_thresholds_as_its_profile_says(profile, tmp_path):
    config = load_config(overrides=[f"experiment.profile={profile}"], source="synthia", method="cbst")
    settings = dataclasses.replace(pseudo_label_settings(config), flip=False, longer_side=None)
    data = Images()
    stats = run_pseudo_label_round(ChannelNet(), data, RoundFolder(str(tmp_path), 0), portion=0.5,
                                   ctx=mx.cpu(), settings=settings, progress=False)
    assert stats["settings"]["released_sampling"] is (profile == "released")
    # By hand: n_c argmax pixels per image; released keeps ceil(n_c / 4) of them and one 0 per class.
    counts = np.array([np.bincount(normalize(im).argmax(0).ravel(), minlength=3) for im in data.images])
    expected = (-(-counts // 4)).sum(0) + (counts.sum(0) > 0) if profile == "released" else counts.sum(0)
    assert stats["argmax_pixels_per_class"] == expected.tolist()


def test_hard_class_selection_hand_computed():
    # shares 0.625, 0.000375, 0, 0.005, 0.25, 0.000125, 0.1195 of 8000 pixels
    hard = select_hard_classes([5000, 3, 0, 40, 2000, 1, 956], share=0.001, number=3)
    assert (hard.priority, hard.rarest, hard.ids) == ((2, 5, 1), (2, 5, 1), (2, 5, 1))
    # no class below 0.001: the three rarest, ties by class id
    hard = select_hard_classes([100, 100, 100, 100])
    assert (hard.priority, hard.ids) == ((), (0, 1, 2))
    # four classes below 0.001 of 100100 pixels: all four, not just the three rarest
    hard = select_hard_classes([100000, 40, 20, 30, 10])
    assert (hard.priority, hard.rarest, hard.ids) == ((4, 2, 3, 1), (4, 2, 3), (4, 2, 3, 1))
    # a share of exactly 0.001 is not below it
    assert select_hard_classes([999, 1], number=3).priority == ()
    assert select_hard_classes([0, 0, 0]).ids == ()


class FakeRun:
    def __init__(self, path):
        self.path, self.logged = path, []

    def pseudo_dir(self, round_idx):
        return self.path / f"round_{round_idx:02d}" / "pseudo"

    def log(self, event, **values):
        self.logged.append(dict(values, event=event))


def test_each_round_trains_on_its_own_hard_classes(tmp_path):
    run = FakeRun(tmp_path)
    for r, sizes in enumerate([[5000, 3, 0, 40, 2000, 1, 956], [100000, 40, 20, 30, 10, 0, 0]]):
        run.pseudo_dir(r).mkdir(parents=True)
        (run.pseudo_dir(r) / "stats.json").write_text(json.dumps({"argmax_pixels_per_class": sizes}))
    released = load_config(method="sisc")
    assert round_hard_classes(run, released, 0).ids == (2, 5, 1)
    round1 = round_hard_classes(run, released, 1)
    assert (round1.priority, round1.rarest) == ((5, 6, 4, 2, 3, 1), (5, 6, 4))
    assert [(e["round"], e["ids"]) for e in run.logged] == [(0, [2, 5, 1]), (1, [5, 6, 4, 2, 3, 1])]
    transform = train_transform(released, hard_classes=round1)
    assert (transform.hard_class, transform.hard_class_priority, transform.hard_class_prob) == (
        (5, 6, 4), (5, 6, 4, 2, 3, 1), 0.8)
    paper = load_config(method="sisc", overrides=["experiment.profile=paper"])
    assert round_hard_classes(run, paper, 0) is None
    fixed = load_config(method="sisc", overrides=["data.hard_classes_released=[4]"])
    assert round_hard_classes(run, fixed, 0) is None
    assert (train_transform(fixed).hard_class, train_transform(fixed).hard_class_priority) == ((4,), ())
    assert train_transform(paper).hard_class is None


def test_released_sampling_reaches_train_and_pseudo_label_alike():
    # `pseudo-label` resolves the same settings as `train` for each profile.
    for profile in ("released", "paper"):
        config = load_config(overrides=[f"experiment.profile={profile}"], method="sisc")
        given = dict(profile=profile, K=None, patch_size=None, seed=None, flip=None, include_si=None,
                     aggregation=None, batch_size=None, longer_side=None, spatial_prior=None, eta=None)
        from_cli = _config_of(None, (), None, "sisc", given)
        assert pseudo_label_settings(from_cli) == pseudo_label_settings(config)

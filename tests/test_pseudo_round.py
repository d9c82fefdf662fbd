"""The per-round pseudo-label pass: outputs, resume after a kill, shards, stale caches, CLI."""
import dataclasses
import json

import cv2
import mxnet as mx
import numpy as np
import pytest
from click.testing import CliRunner
from mxnet.gluon import nn

import mlsl_gluon.pseudo_labels.round as round_module
from mlsl_gluon.cli import main
from mlsl_gluon.config import Config, pseudo_label_settings
from mlsl_gluon.pseudo_labels import (
    CacheError,
    combine_pseudo_label_round,
    pseudo_weak_labels,
    run_pseudo_label_round,
)
from mlsl_gluon.pseudo_labels.round import RoundFolder

NUM_CLASSES = 4


class ContextNet(nn.HybridBlock):
    """3x3 conv + softmax stand-in: predictions depend on context, so SISC differs from SI."""

    def __init__(self):
        super().__init__()
        self.num_classes = NUM_CLASSES
        self.conv = nn.Conv2D(NUM_CLASSES, 3, padding=1, in_channels=3)

    def hybrid_forward(self, F, x):
        return self.conv(x)

    def predict(self, x, flip=False):
        prob = mx.nd.softmax(self(x) * 4, axis=1)
        return 0.5 * (prob + self.predict(x.flip(axis=3)).flip(axis=3)) if flip else prob


class TinyTarget:
    """Target set in the dataset item format: (image, None, name), names with subfolders."""

    num_classes = NUM_CLASSES

    def __init__(self, count=5, shape=(26, 38)):
        rng = np.random.default_rng(0)
        self.images = [rng.integers(0, 256, size=shape + (3,), dtype=np.uint8) for _ in range(count)]
        self.names = [f"city{i % 2}/frame_{i:03d}" for i in range(count)]

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], None, self.names[i]


@pytest.fixture(scope="module")
def net():
    mx.random.seed(1)
    block = ContextNet()
    block.initialize(mx.init.Normal(0.5), ctx=mx.cpu())
    return block


SIZES = np.array([0.3, 0.2, 0.1, 0.05])
SETTINGS = dataclasses.replace(pseudo_label_settings(Config()), method="sisc", K=4, patch_size=16, seed=3,
                               batch_size=3, longer_side=None, spatial_prior=False, weak_labels=True,
                               released_sampling=False)
ROUND = dict(portion=0.3, ctx=mx.cpu(), settings=SETTINGS, checkpoint_digest="w1",
             source_stats={"class_mean_sizes": SIZES, "spatial_prior": None})


def folder(path, shard=(0, 1), colour=False):
    return RoundFolder(str(path), 2, shard, colour)


def read_labels(out_dir, names):
    return {n: cv2.imread(str(out_dir / "labels" / f"{n}.png"), cv2.IMREAD_UNCHANGED) for n in names}


def test_round_writes_labels_weak_labels_and_stats(net, tmp_path):
    data = TinyTarget()
    stats = run_pseudo_label_round(net, data, folder(tmp_path), **ROUND)
    labels = read_labels(tmp_path, data.names)
    weak = json.loads((tmp_path / "weak_labels.json").read_text())
    on_disk = json.loads((tmp_path / "stats.json").read_text())
    assert on_disk == json.loads(json.dumps(stats))
    selected = np.zeros(NUM_CLASSES, int)
    for name, label in labels.items():
        assert label.dtype == np.uint8 and label.shape == (26, 38)
        assert set(np.unique(label)) <= set(range(NUM_CLASSES)) | {255}
        selected += np.bincount(label.ravel(), minlength=256)[:NUM_CLASSES]
        assert weak[name] == pseudo_weak_labels(label, SIZES, 0.05).tolist()
    assert stats["selected_pixels_per_class"] == selected.tolist()
    assert stats["num_images"] == 5 and len(stats["thresholds"]) == NUM_CLASSES
    # Class balance: about the portion of each class's argmax pixels is selected.
    for n_sel, n_arg in zip(stats["selected_pixels_per_class"], stats["argmax_pixels_per_class"]):
        if n_arg > 100:
            assert n_sel / n_arg == pytest.approx(0.3, abs=0.05)
    assert stats["settings"]["K"] == 4 and stats["settings"]["checkpoint_digest"] == "w1"


def test_vanished_class_is_reported(tmp_path, caplog):
    # Near-uniform probabilities never reach k_c = 1, the threshold at portion 0.
    flat = ContextNet()
    flat.initialize(mx.init.Normal(0.001), ctx=mx.cpu())
    stats = run_pseudo_label_round(flat, TinyTarget(count=2), folder(tmp_path), **dict(ROUND, portion=0.0))
    assert stats["thresholds"] == [1.0] * NUM_CLASSES
    assert stats["vanished_classes"] == ["0", "1", "2", "3"]
    assert "self-training can collapse" in caplog.text


def test_resume_after_a_kill_skips_finished_images(net, tmp_path, monkeypatch):
    data = TinyTarget()
    reference = run_pseudo_label_round(net, data, folder(tmp_path / "whole"), **ROUND)
    real = round_module.sisc_inference
    calls = []

    def dies_after_two(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated kill")
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(round_module, "sisc_inference", dies_after_two)
    with pytest.raises(KeyboardInterrupt):
        run_pseudo_label_round(net, data, folder(tmp_path / "resumed"), **ROUND)
    calls.clear()

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(round_module, "sisc_inference", counting)
    resumed = run_pseudo_label_round(net, data, folder(tmp_path / "resumed"), **ROUND)
    assert len(calls) == 3  # only the images not finished before the kill
    assert resumed["thresholds"] == reference["thresholds"]
    assert resumed["selected_pixels_per_class"] == reference["selected_pixels_per_class"]
    a, b = read_labels(tmp_path / "whole", data.names), read_labels(tmp_path / "resumed", data.names)
    assert all(np.array_equal(a[n], b[n]) for n in data.names)


@pytest.mark.parametrize("with_prior", [False, True])
def test_shards_combine_to_one_pass(net, tmp_path, with_prior):
    data = TinyTarget()
    setup = ROUND
    if with_prior:
        # The prior's finer first-class grid: thresholds refined by a sweep over both shards' caches.
        prior = np.random.default_rng(0).dirichlet(np.ones(4), size=(3, 5)).transpose(2, 0, 1)
        setup = dict(ROUND, settings=dataclasses.replace(SETTINGS, spatial_prior=True),
                     source_stats={"class_mean_sizes": SIZES, "spatial_prior": prior.astype(np.float32)})
    single = run_pseudo_label_round(net, data, folder(tmp_path / "single"), **setup)
    assert single["settings"]["first_code_shift"] == (-2 if with_prior else -1)
    out = tmp_path / "sharded"
    first = run_pseudo_label_round(net, data, folder(out, (0, 2)), **setup)
    assert first["images"] == 3 and not (out / "stats.json").exists()
    with pytest.raises(FileNotFoundError, match="1 of 2 shards"):
        combine_pseudo_label_round(folder(out), portion=0.3, num_shards=2)
    run_pseudo_label_round(net, data, folder(out, (1, 2)), **setup)
    combined = combine_pseudo_label_round(folder(out), portion=0.3, num_shards=2,
                                          class_mean_sizes=SIZES, eta=SETTINGS.eta)
    assert combined["thresholds"] == single["thresholds"]
    assert combined["selected_pixels_per_class"] == single["selected_pixels_per_class"]
    a, b = read_labels(tmp_path / "single", data.names), read_labels(out, data.names)
    assert all(np.array_equal(a[n], b[n]) for n in data.names)
    assert json.loads((out / "weak_labels.json").read_text()) == \
        json.loads((tmp_path / "single" / "weak_labels.json").read_text())


def test_cache_of_other_weights_is_refused(net, tmp_path, monkeypatch):
    data = TinyTarget(count=2)
    run_pseudo_label_round(net, data, folder(tmp_path), **ROUND)
    with pytest.raises(CacheError, match="checkpoint_digest: cache has 'w1', expected 'w2'"):
        run_pseudo_label_round(net, data, folder(tmp_path), **dict(ROUND, checkpoint_digest="w2"))
    calls = []
    real = round_module.sisc_inference
    monkeypatch.setattr(round_module, "sisc_inference", lambda *a, **k: calls.append(1) or real(*a, **k))
    run_pseudo_label_round(net, data, folder(tmp_path), regenerate=True,
                           **dict(ROUND, checkpoint_digest="w2"))
    assert len(calls) == 2  # regenerated: nothing reused


def test_without_si_uncovered_pixels_are_unlabelled(net, tmp_path):
    data = TinyTarget(count=2)
    stats = run_pseudo_label_round(net, data, folder(tmp_path),
                                   **dict(ROUND, portion=1.0,
                                            settings=dataclasses.replace(SETTINGS, K=1, include_si=False)))
    assert stats["uncovered_pixels"] == 2 * (26 * 38 - 16 * 16)
    for label in read_labels(tmp_path, data.names).values():
        assert (label != 255).sum() <= 16 * 16


def test_si_method_and_colour(net, tmp_path):
    data = TinyTarget(count=2)
    stats = run_pseudo_label_round(net, data, folder(tmp_path, colour=True),
                                   **dict(ROUND, settings=dataclasses.replace(SETTINGS, method="si")))
    assert stats["settings"]["method"] == "si" and stats["settings"]["K"] == 0
    colour = cv2.imread(str(tmp_path / "colour" / f"{data.names[0]}.png"))
    assert colour.shape == (26, 38, 3)


def test_pseudo_label_cli_with_shards(tmp_path):
    from mlsl_gluon.model import MLSLNet, init_params
    from mlsl_gluon.model.weights import save_weights

    root = tmp_path / "cityscapes"
    folder = root / "leftImg8bit" / "train" / "aachen"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(folder / f"aachen_{i:06d}_000019_leftImg8bit.png"),
                    rng.integers(0, 256, size=(40, 64, 3), dtype=np.uint8))
    net = MLSLNet(num_classes=19, width=1 / 32, with_classifier=False)
    init_params(net, ctx=mx.cpu())
    weights = tmp_path / "w.params"
    save_weights(net, str(weights))
    out = tmp_path / "round0"
    common = ["--round", "0", "--portion", "0.2", "--out", str(out), "--method", "sisc", "--no-spatial-prior"]
    run = ["pseudo-label", "--weights", str(weights), "--data-root", str(root), "--K", "2",
           "--patch-size", "32", "--no-flip", "--longer-side", "64"] + common
    for shard in ("0/2", "1/2"):
        result = CliRunner().invoke(main, run + ["--shard", shard])
        assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["pseudo-label", "--combine", "--shard", "0/2"] + common)
    assert result.exit_code == 0, result.output
    stats = json.loads((out / "stats.json").read_text())
    assert stats["num_images"] == 3 and stats["num_shards"] == 2
    assert len(list((out / "labels" / "aachen").glob("*.png"))) == 3
    # Same cache, other settings: refused with the file and field named.
    result = CliRunner().invoke(main, run[:-len(common)] + ["--K", "3"] + common + ["--shard", "0/2"])
    assert result.exit_code != 0 and "K: cache has 2, expected 3" in result.output

"""The round loop on tiny generated data (SYNTHIA + Cityscapes formats), reduced width, CPU:
resume after a failure at every stage gives the parameters of an uninterrupted run; NaN stops
the run keeping the last good checkpoint; a changed config is refused."""
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest
from click.testing import CliRunner

import mlsl_gluon.pseudo_labels.round as pseudo_round
from mlsl_gluon.cli import main
from mlsl_gluon.config import ConfigError, load_config
from mlsl_gluon.training.checkpoint import read_checkpoint
from mlsl_gluon.training.datasets import SelfTrainingSet
from mlsl_gluon.training.experiment import run_experiment
from mlsl_gluon.training.stage import TrainingStopped

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("reproduce", ROOT / "tools" / "reproduce.py")
reproduce = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reproduce)

# 2 rounds x 1 epoch: 2 + 4 then 3 + 4 (source + target) images at batch 1; checkpoint every 2.
SIZES = reproduce.SMOKE_SIZES
CTX = [mx.cpu()]


class Boom(RuntimeError):
    """The injected failure."""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, smoke_synthia):
    """``(folder for this module's runs, data root, weights)``."""
    data, weights = smoke_synthia
    return tmp_path_factory.mktemp("rounds"), data, weights


def config(method="sisc-pwl", extra=()):
    return load_config(overrides=SIZES + list(extra), source="synthia", method=method)


def params_of(path):
    return {k: v.asnumpy() for k, v in mx.nd.load(str(path)).items()}


def max_rel_diff(a, b):
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[k] - b[k])) / (np.max(np.abs(b[k])) + 1e-12)) for k in a)


def events(run_dir, event):
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == event]


@pytest.fixture(scope="module")
def reference(inputs):
    """The uninterrupted run: its folder, its summary, and every learning rate the SGD optimiser
    applied, as ``(optimiser, update number, parameter name, lr)`` (read where SGD computes its
    per-parameter rates from the base rate and the parameter's multiplier)."""
    root, data, weights = inputs
    out = root / "reference"
    applied = []
    real_get_lrs = mx.optimizer.SGD._get_lrs

    def spy(optimizer, indices):
        lrs = real_get_lrs(optimizer, indices)
        applied.extend((optimizer, optimizer.num_update, optimizer.param_dict[i].name, lr)
                       for i, lr in zip(indices, lrs))
        return lrs

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mx.optimizer.SGD, "_get_lrs", spy)
        summary = run_experiment(config(), data, weights, out, CTX, progress=False)
    return out, summary, applied


def run_with_fault(inputs, name, fault, method="sisc-pwl"):
    """Run until ``fault`` raises Boom, then resume with the same arguments to the end."""
    root, data, weights = inputs
    out = root / name
    with pytest.raises(Boom):
        run_experiment(config(method), data, weights, out, CTX, on_event=fault, progress=False)
    assert not (out / "DONE").exists()
    run_experiment(config(method), data, weights, out, CTX, resume=True, progress=False)
    return out


def test_uninterrupted_run_folder(reference):
    out, summary, _ = reference
    assert (out / "DONE").is_file() and (out / "config.yaml").is_file()
    provenance = json.loads((out / "run.json").read_text())[0]
    assert provenance["version"] and provenance["git_hash"]
    for r in (0, 1):
        assert (out / f"checkpoints/round_{r:02d}.params").is_file()
        assert (out / f"round_{r:02d}/pseudo/weak_labels.json").is_file()
        assert len(list((out / f"round_{r:02d}/pseudo/labels").rglob("*.png"))) == 4
    assert [e["round"] for e in events(out, "pseudo_labels")] == [0, 1]
    assert [e["portion"] for e in events(out, "pseudo_labels")] == [0.15, 0.2]
    assert [(e["round"], e["epoch"], e["iterations"]) for e in events(out, "epoch")] == [(0, 0, 6), (1, 0, 7)]
    evals = events(out, "eval")
    assert [e["round"] for e in evals] == [0, 1] and len(evals[0]["iou"]) == 16
    assert summary["miou"] == evals[-1]["miou"] and summary["miou13"] is not None
    assert json.loads((out / "iou.json").read_text())["miou"] == summary["miou"]


def test_optimiser_applies_the_round_learning_rate(reference):
    """Round r updates with 1e-4 / sqrt(2)^r (weights; biases at twice that) at every iteration."""
    applied = reference[2]
    optimisers = list(dict.fromkeys(opt for opt, *_ in applied))
    assert len(optimisers) == 2  # a new optimiser per round
    for opt, expected, iterations in zip(optimisers, (1e-4, 1e-4 / math.sqrt(2)), (6, 7)):
        mine = [(n, name, lr) for o, n, name, lr in applied if o is opt]
        assert {n for n, _, _ in mine} == set(range(1, iterations + 1))
        weights = [lr for _, name, lr in mine if name.endswith("_weight")]
        biases = [lr for _, name, lr in mine if name.endswith("_bias")]
        assert weights and biases
        assert weights == pytest.approx([expected] * len(weights), rel=1e-12)
        assert biases == pytest.approx([2 * expected] * len(biases), rel=1e-12)


def test_resume_mid_epoch(inputs, reference):
    def fault(event, **info):
        # After iteration 2 of round 1 (the newest checkpoint is the one after iteration 1).
        if event == "iteration" and info["round"] == 1 and info["iteration"] == 2:
            raise Boom

    out = run_with_fault(inputs, "mid_epoch", fault)
    assert max_rel_diff(params_of(out / "final.params"), params_of(reference[0] / "final.params")) <= 1e-5
    assert [e["round"] for e in events(out, "pseudo_labels")] == [0, 1]  # no round redone
    # Round 1 restarts at the checkpoint after iteration 1 and runs its remaining 5 iterations;
    # its record still covers the whole epoch, and no line is written twice.
    epochs, expected = events(out, "epoch"), events(reference[0], "epoch")
    assert [(e["round"], e["iterations"], e["images"]) for e in epochs] == [
        (e["round"], e["iterations"], e["images"]) for e in expected]
    assert epochs[1]["resumed_at"] == 2
    for got, want in zip(epochs, expected):
        assert got["total"] == pytest.approx(want["total"], rel=1e-4)
    assert [(e["round"], e["iteration"]) for e in events(out, "train")] == [
        (e["round"], e["iteration"]) for e in events(reference[0], "train")]


def test_resume_between_rounds(inputs, reference):
    def fault(event, **info):
        if event == "round_end" and info["round"] == 0:
            raise Boom

    out = run_with_fault(inputs, "between_rounds", fault)
    assert max_rel_diff(params_of(out / "final.params"), params_of(reference[0] / "final.params")) <= 1e-5
    assert [e["round"] for e in events(out, "eval")] == [0, 1]
    assert [e["round"] for e in events(out, "pseudo_labels")] == [0, 1]


def test_resume_during_pseudo_labelling_reuses_entries(inputs, reference, monkeypatch):
    real = pseudo_round.sisc_inference
    calls = []

    def counting(*args, **kwargs):
        calls.append(1)
        if crash["on"] and len(calls) == 4 + 3:  # round 0 labels 4 images; die on round 1's third
            raise Boom
        return real(*args, **kwargs)

    crash = {"on": True}
    monkeypatch.setattr(pseudo_round, "sisc_inference", counting)
    root, data, weights = inputs
    out = root / "during_pseudo"
    with pytest.raises(Boom):
        run_experiment(config(), data, weights, out, CTX, progress=False)
    crash["on"], calls[:] = False, []
    run_experiment(config(), data, weights, out, CTX, resume=True, progress=False)
    assert len(calls) == 2  # only the two round-1 images without a cache entry are segmented again
    assert max_rel_diff(params_of(out / "final.params"), params_of(reference[0] / "final.params")) <= 1e-5


def test_nan_loss_stops_with_iteration_and_keeps_last_good_checkpoint(inputs, monkeypatch):
    real_load = SelfTrainingSet.load
    seen = []

    def poisoned(self, index, rng):
        seen.append(index)
        img, label8, weak = real_load(self, index, rng)
        if len(seen) == 3:  # the third batch (batch size 1) of round 0
            img = np.full_like(img, np.nan)
        return img, label8, weak

    monkeypatch.setattr(SelfTrainingSet, "load", poisoned)
    root, data, weights = inputs
    out = root / "nan"
    with pytest.raises(TrainingStopped, match=r"round 0, epoch 0, iteration 2 of the epoch.*non-finite"):
        # Loads counted in this process: no loader workers.
        run_experiment(config(extra=["train.loader_workers=0"]), data, weights, out, CTX, progress=False)
    state, _ = read_checkpoint(out / "checkpoints" / "latest.params")
    assert (state["round"], state["epoch"], state["iteration"]) == (0, 0, 2)
    assert events(out, "stopped")[0]["iteration"] == 2


def test_resume_with_other_config_is_refused(inputs, reference):
    root, data, weights = inputs
    with pytest.raises(ConfigError, match=r"refusing to resume .* experiment.seed: 0 != 1"):
        run_experiment(config(extra=["experiment.seed=1"]), data, weights, reference[0], CTX, resume=True)
    with pytest.raises(ConfigError, match="already holds a run .* pass --resume"):
        run_experiment(config(), data, weights, reference[0], CTX)


def test_finished_run_is_not_redone(inputs, reference):
    root, data, weights = inputs
    before = (reference[0] / "metrics.jsonl").read_text()
    summary = run_experiment(config(), data, weights, reference[0], CTX, resume=True, progress=False)
    assert summary == reference[1] and (reference[0] / "metrics.jsonl").read_text() == before


def test_resume_after_sigkill(inputs, reference):
    """The real thing: the CLI process is SIGKILLed while training round 1, then resumed."""
    root, data, weights = inputs
    out = root / "sigkill"
    args = ["train", "--source", "synthia", "--method", "sisc-pwl", "--data-root", str(data), "--weights",
            str(weights), "--out", str(out), "--no-progress"] + [a for s in SIZES for a in ("--set", s)]
    proc = subprocess.Popen([sys.executable, "-c", "from mlsl_gluon.cli import main; main()"] + args,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            log = out / "metrics.jsonl"
            if log.is_file() and any(e["round"] == 1 for e in events(out, "train")):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert not (out / "DONE").exists()
    result = CliRunner().invoke(main, args + ["--resume"])
    assert result.exit_code == 0, result.output
    assert max_rel_diff(params_of(out / "final.params"), params_of(reference[0] / "final.params")) <= 1e-5
    assert [e["round"] for e in events(out, "pseudo_labels")] == [0, 1]


def test_two_cpu_contexts(inputs):
    """Data parallel over two contexts through the whole loop (batch 2 split 1 + 1)."""
    root, data, weights = inputs
    out = root / "two_ctx"
    cfg = load_config(overrides=SIZES + ["rounds.num_rounds=1"], source="synthia", method="sisc")
    summary = run_experiment(cfg, data, weights, out, [mx.cpu(0), mx.cpu(1)], progress=False)
    assert (out / "DONE").is_file() and summary["round_miou"].keys() == {"0"}
    assert [e["images"] for e in events(out, "epoch")] == [6]

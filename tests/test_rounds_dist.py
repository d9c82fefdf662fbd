"""`mlsl-gluon train --kvstore dist_sync` with a scheduler, a server and two workers on 127.0.0.1:
both workers run the same command, each pseudo-labels its shard of the target set, both train on
the combined labels (each on its shard of every batch) and end with identical parameters."""
import importlib.util
import json
import sys
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest

from mlsl_gluon.config import load_config
from mlsl_gluon.training.distributed import run_local_cluster
from mlsl_gluon.training.experiment import run_experiment

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("reproduce", ROOT / "tools" / "reproduce.py")
reproduce = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reproduce)
SETS = reproduce.SMOKE_SIZES + ["rounds.num_rounds=1"]


class StepOneDone(Exception):
    """Raised by the event hook of the 1-worker reference once step 1 of round 0 is done."""


def stop_after_step_one(event, **info):
    if event == "pseudo_done":
        raise StepOneDone


def label_files(pseudo_dir):
    return {str(p.relative_to(pseudo_dir)): p.read_bytes() for p in (pseudo_dir / "labels").rglob("*.png")}


@pytest.mark.slow
def test_two_workers_share_step_one_and_end_with_identical_parameters(tmp_path, smoke_synthia):
    data, weights = smoke_synthia
    out = tmp_path / "dist"
    argv = [sys.executable, "-c", "from mlsl_gluon.cli import main; main()", "train", "--source", "synthia",
            "--method", "sisc-pwl", "--data-root", str(data), "--weights", str(weights),
            "--out", str(out), "--kvstore", "dist_sync", "--no-progress"]
    argv += [a for s in SETS for a in ("--set", s)]
    (tmp_path / "logs").mkdir()
    run_local_cluster(argv, 2, timeout=240, log_dir=str(tmp_path / "logs"))
    first = mx.nd.load(str(out / "final.params"))
    second = mx.nd.load(str(out / "worker1" / "final.params"))
    assert first.keys() == second.keys()
    for key in first:
        np.testing.assert_array_equal(first[key].asnumpy(), second[key].asnumpy(), err_msg=key)
    start = mx.nd.load(str(weights))["arg:linear16_weight"].asnumpy()
    assert not np.allclose(first["seg_head.linear.weight"].asnumpy(), start)  # it did train

    # Step 1 of the same round by one worker alone (stopped right after it).
    single = tmp_path / "single"
    with pytest.raises(StepOneDone):
        run_experiment(load_config(None, SETS, source="synthia", method="sisc-pwl"), data, weights, single,
                       [mx.cpu()], on_event=stop_after_step_one, progress=False)
    shared, alone = out / "round_00" / "pseudo", single / "round_00" / "pseudo"
    labels = label_files(alone)
    assert len(labels) == reproduce.SMOKE_DATA["n_target_train"]
    assert label_files(shared) == labels  # byte for byte: thresholds merged exactly from both shards
    weak = json.loads((alone / "weak_labels.json").read_text())
    assert json.loads((shared / "weak_labels.json").read_text()) == weak and len(weak) == len(labels)
    # Worker r inferred images r, r + 2, ... into its own cache shard, and nothing else.
    everything = json.loads((alone / "shards" / "round0_shard0of1.json").read_text())["names"]
    for rank in range(2):
        manifest = json.loads((shared / "shards" / f"round0_shard{rank}of2.json").read_text())
        assert manifest["names"] == everything[rank::2] and manifest["skipped"] == 0
        assert manifest["cache_path"] == str(shared / f"probabilities.shard{rank}of2.h5")
    assert not (out / "worker1" / "round_00" / "pseudo").exists()
    # Both trained on all of it: each made ceil((2 + 4) / (2 workers x batch 1)) = 3 steps.
    for folder in (out, out / "worker1"):
        epochs = [line for line in (folder / "metrics.jsonl").read_text().splitlines() if '"epoch"' in line]
        assert '"iterations": 3' in epochs[-1] and '"images": 3' in epochs[-1]

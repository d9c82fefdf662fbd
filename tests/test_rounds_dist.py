"""A row of `tools/reproduce.py --kvstore dist_sync` (`mlsl-gluon train --kvstore dist_sync` with a
scheduler, a server and two workers on 127.0.0.1): both workers run the same command, each
pseudo-labels its shard of the target set, both train on the combined labels (each on its shard
of every batch) and end with identical parameters; a second invocation reuses the finished row."""
import importlib.util
import json
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest

from mlsl_gluon.config import load_config
from mlsl_gluon.training.cluster import free_port
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
    # The Table 2 row as the driver runs it on a 2-host cluster, both "hosts" being this one.
    cluster = reproduce.Cluster("dist_sync", "127.0.0.1", free_port(), num_workers=2, local_workers=2,
                                serve=True, node_host="127.0.0.1")
    runner = reproduce.RowRunner(cluster)
    runs = reproduce.reproduce("table2", data, weights.parent, tmp_path, extra=SETS, rows=("sisc-pwl",),
                               runner=runner)
    out = tmp_path / "synthia_sisc_pwl"
    assert runs == {"sisc-pwl": out} and runner.started == [out]
    assert sorted(p.name for p in (tmp_path / "cluster_logs" / out.name).glob("*/*.log")) == \
        ["scheduler.log", "server0.log", "worker0.log", "worker1.log"]
    first = mx.nd.load(str(out / "final.params"))
    second = mx.nd.load(str(out / "worker1" / "final.params"))
    assert first.keys() == second.keys()
    for key in first:
        np.testing.assert_array_equal(first[key].asnumpy(), second[key].asnumpy(), err_msg=key)
    start = mx.nd.load(str(weights))["arg:linear16_weight"].asnumpy()
    assert not np.allclose(first["seg_head.linear.weight"].asnumpy(), start)  # it did train

    # Step 1 of the same round by one worker alone (stopped right after it).
    single = tmp_path / "single"
    config = load_config(ROOT / "experiments" / "synthia_sisc_pwl.yaml", SETS)
    with pytest.raises(StepOneDone):
        run_experiment(config, data, weights, single, [mx.cpu()], on_event=stop_after_step_one,
                       progress=False)
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

    # A rerun on every host reuses the finished row: no cluster, nothing rewritten.
    stamp = (out / "metrics.jsonl").stat().st_mtime_ns
    again = reproduce.RowRunner(cluster)
    assert reproduce.reproduce("table2", data, weights.parent, tmp_path, extra=SETS, rows=("sisc-pwl",),
                               runner=again) == runs
    assert again.started == [] and again.rows == 1 and (out / "metrics.jsonl").stat().st_mtime_ns == stamp

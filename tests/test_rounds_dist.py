"""`mlsl-gluon train --kvstore dist_sync` with a scheduler, a server and two workers on 127.0.0.1:
both workers run the same command, train on their shards, and end with identical parameters."""
import importlib.util
import sys
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest

from mlsl_gluon.training.distributed import run_local_cluster

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("reproduce", ROOT / "tools" / "reproduce.py")
reproduce = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reproduce)


@pytest.mark.slow
def test_two_workers_end_with_identical_parameters(tmp_path, smoke_synthia):
    data, weights = smoke_synthia
    out = tmp_path / "dist"
    argv = [sys.executable, "-c", "from mlsl_gluon.cli import main; main()", "train", "--source", "synthia",
            "--method", "sisc", "--data-root", str(data), "--weights", str(weights),
            "--out", str(out), "--kvstore", "dist_sync", "--no-progress"]
    argv += [a for s in reproduce.SMOKE_SIZES + ["rounds.num_rounds=1"] for a in ("--set", s)]
    (tmp_path / "logs").mkdir()
    run_local_cluster(argv, 2, timeout=240, log_dir=str(tmp_path / "logs"))
    first = mx.nd.load(str(out / "final.params"))
    second = mx.nd.load(str(out / "worker1" / "final.params"))
    assert first.keys() == second.keys()
    for key in first:
        np.testing.assert_array_equal(first[key].asnumpy(), second[key].asnumpy(), err_msg=key)
    start = mx.nd.load(str(weights))["arg:linear16_weight"].asnumpy()
    assert not np.allclose(first["seg_head.linear.weight"].asnumpy(), start)  # it did train
    # Each worker made ceil((2 + 4) / (2 workers x batch 2)) = 2 steps on its own shard.
    for folder in (out, out / "worker1"):
        epochs = [line for line in (folder / "metrics.jsonl").read_text().splitlines() if '"epoch"' in line]
        assert '"iterations": 2' in epochs[-1] and '"images": 4' in epochs[-1]

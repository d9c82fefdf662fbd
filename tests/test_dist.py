"""dist_sync on 127.0.0.1: a scheduler, one server and two workers, each training on its shard.

The workers must end with identical parameters, equal to one process training on the same
global batches (the kvstore sums the workers' gradients)."""
import importlib.util
import sys
import textwrap

import mxnet as mx
import numpy as np
import pytest
from mxnet.gluon import nn

from mlsl_gluon.training import build_trainer, distributed
from mlsl_gluon.training.cluster import dist_environment, free_port, run_local_cluster
from mlsl_gluon.training.distributed import shard_indices

WORKER_SCRIPT = textwrap.dedent('''
    """Train a small dropout-free net a few steps; 'dist' = one dist_sync worker, 'single' = reference."""
    import os
    import sys

    import mxnet as mx
    import numpy as np
    from mxnet import gluon
    from mxnet.gluon import nn

    from mlsl_gluon.config import LossSettings
    from mlsl_gluon.training import build_trainer, num_workers, round_learning_rate, train_epoch, worker_rank
    from mlsl_gluon.training.distributed import shard_indices

    NUM_SAMPLES, LOCAL_BATCH, NUM_WORKERS, C, SIZE = 8, 2, 2, 4, 16


    class Net(gluon.HybridBlock):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            with self.name_scope():
                self.bn = nn.BatchNorm(use_global_stats=True)
                self.conv1 = nn.Conv2D(16, 3, strides=2, padding=1)
                self.conv2 = nn.Conv2D(16, 3, strides=4, padding=1)
                self.seg = nn.Conv2D(C, 1)
                self.fc = nn.Dense(C)

        def hybrid_forward(self, F, x):
            h = F.relu(self.conv2(F.relu(self.conv1(self.bn(x)))))
            return self.seg(h), self.fc(F.mean(h, axis=(2, 3)))


    def dataset():
        rng = np.random.RandomState(0)
        images = rng.randn(NUM_SAMPLES, 3, SIZE, SIZE).astype(np.float32)
        label8 = rng.randint(0, C, size=(NUM_SAMPLES, SIZE // 8, SIZE // 8)).astype(np.float32)
        weak = rng.randint(0, 2, size=(NUM_SAMPLES, C)).astype(np.float32)
        return images, label8, weak


    def batches(indices_per_step):
        images, label8, weak = dataset()
        return [(images[i], label8[i], weak[i]) for i in indices_per_step]


    def main(out_dir, mode):
        # A different initialisation in every process: the kvstore must give all rank 0's.
        mx.random.seed(0 if mode == "single" else os.getpid())
        net = Net()
        net.initialize(mx.init.Xavier(), ctx=mx.cpu())
        net(mx.nd.zeros((1, 3, SIZE, SIZE)))
        if mode == "single":
            net.load_parameters(os.path.join(out_dir, "init0.params"))
        # Inference with the hybridized network first, as the pseudo-label step does (it leaves
        # conv weights in oneDNN's layout; pushing those arrays as they are lost init messages).
        net.hybridize()
        with mx.autograd.predict_mode():
            net(mx.nd.zeros((2, 3, SIZE, SIZE)))[0].wait_to_read()
        # Two "rounds", a new trainer each, as the round runner does (one kvstore per process).
        for round_idx in range(2):
            lr = round_learning_rate(0.1, round_idx)
            if mode == "dist":
                trainer = build_trainer(net, [mx.cpu()], lr=lr, kvstore="dist_sync")
                rank, workers = worker_rank(trainer), num_workers(trainer)
                if round_idx == 0:
                    net.save_parameters(os.path.join(out_dir, f"init{rank}.params"))
                shard = shard_indices(NUM_SAMPLES, rank, workers)
                steps = [shard[s:s + LOCAL_BATCH] for s in range(0, len(shard), LOCAL_BATCH)]
            else:
                trainer, rank = build_trainer(net, [mx.cpu()], lr=lr, kvstore="device"), 0
                shards = [shard_indices(NUM_SAMPLES, r, NUM_WORKERS) for r in range(NUM_WORKERS)]
                steps = [np.concatenate([s[t:t + LOCAL_BATCH] for s in shards])
                         for t in range(0, len(shards[0]), LOCAL_BATCH)]
            # per-image averaging: the 2-worker update equals the 1-worker one on the joint batch
            stats = train_epoch(net, trainer, batches(steps), [mx.cpu()],
                                loss=LossSettings(use_cls=True, normalization="per_image"), progress=False)
        net.save_parameters(os.path.join(out_dir, f"{mode}{rank}.params"))
        print("rank", rank, "steps", [list(map(int, s)) for s in steps], "loss", stats["total"])


    if __name__ == "__main__":
        main(sys.argv[1], sys.argv[2])
''')


def test_shard_indices_cover_everything_with_equal_lengths():
    shards = [shard_indices(10, r, 3) for r in range(3)]
    assert [len(s) for s in shards] == [4, 4, 4]
    np.testing.assert_array_equal(shards[0], [0, 3, 6, 9])
    np.testing.assert_array_equal(shards[1], [1, 4, 7, 0])
    assert set(np.concatenate(shards)) == set(range(10))
    np.testing.assert_array_equal(shard_indices(5, 0, 1), np.arange(5))
    for bad in [(10, 3, 3), (10, -1, 3), (10, 0, 0), (0, 0, 1)]:
        with pytest.raises(ValueError):
            shard_indices(*bad)


def test_dist_environment_and_free_port():
    env = dist_environment("server", root_uri="127.0.0.1", root_port=9091, num_workers=2,
                           node_host="127.0.0.1")
    assert env == {"DMLC_ROLE": "server", "DMLC_PS_ROOT_URI": "127.0.0.1", "DMLC_PS_ROOT_PORT": "9091",
                   "DMLC_NUM_SERVER": "1", "DMLC_NUM_WORKER": "2", "DMLC_NODE_HOST": "127.0.0.1"}
    with pytest.raises(ValueError, match="role"):
        dist_environment("boss", root_uri="127.0.0.1", root_port=1, num_workers=1)
    assert 0 < free_port() < 65536


def load_params(path):
    return {k: v.asnumpy() for k, v in mx.nd.load(str(path)).items()}


def run_in_process(script, *argv):
    """The single-process reference run, without paying another mxnet import (~10 s here)."""
    spec = importlib.util.spec_from_file_location("mlsl_dist_worker", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(*argv)


def test_two_dist_sync_workers_end_with_identical_parameters(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER_SCRIPT)
    outputs = run_local_cluster([sys.executable, str(script), str(tmp_path), "dist"],
                                num_workers=2, timeout=150, log_dir=str(tmp_path))
    assert len(outputs) == 2
    init0, init1 = load_params(tmp_path / "init0.params"), load_params(tmp_path / "init1.params")
    for name in init0:
        np.testing.assert_array_equal(init0[name], init1[name], err_msg=name)
    run_in_process(script, str(tmp_path), "single")
    worker0, worker1 = load_params(tmp_path / "dist0.params"), load_params(tmp_path / "dist1.params")
    single = load_params(tmp_path / "single0.params")
    assert worker0.keys() == worker1.keys() == single.keys()
    moved = False
    for name in worker0:
        np.testing.assert_array_equal(worker0[name], worker1[name], err_msg=name)
        np.testing.assert_allclose(worker0[name], single[name], rtol=1e-5, atol=1e-6, err_msg=name)
        moved |= not np.allclose(worker0[name], init0[name])
    assert moved, "training must change the parameters"
    assert any("rank 0" in out for out in outputs) and any("rank 1" in out for out in outputs)


def test_cluster_failure_is_reported_and_processes_are_cleaned_up(tmp_path):
    with pytest.raises(RuntimeError, match="worker"):
        run_local_cluster([sys.executable, "-c", "import sys; sys.exit(3)"], num_workers=1, timeout=60,
                          log_dir=str(tmp_path))


def test_a_later_trainer_must_train_the_same_network(monkeypatch):
    net = nn.Dense(3, in_units=4)
    net.initialize(ctx=mx.cpu())
    trainer = build_trainer(net, [mx.cpu()], lr=0.1, kvstore="local")
    store = object()  # stands for the process's dist kvstore, already serving another network
    monkeypatch.setattr(distributed, "_INITIALISED_KVSTORES", [(store, [(5, 4), (5,)])])
    with pytest.raises(ValueError, match="one network per process"):
        distributed.start_distributed_trainer(trainer, store)

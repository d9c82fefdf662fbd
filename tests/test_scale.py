"""Scaling step 1 and step 2 out: background loader workers give the batches of the training
process itself, and MXNet's dropout generator is reseeded per step wherever batches come from."""
import json
import threading
import time
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest
from mxnet.gluon import nn
from test_rounds_datasets import make_set, pseudo_dir  # noqa: F401  (fixture)

from mlsl_gluon.config import LossSettings
from mlsl_gluon.model import MLSLNet, init_params
from mlsl_gluon.pseudo_labels.inference import single_inference, single_inference_many
from mlsl_gluon.training import build_trainer, train_epoch
from mlsl_gluon.training.datasets import EpochBatches
from mlsl_gluon.training.loader import BackgroundBatches
from mlsl_gluon.training.worker_group import (
    SharedFolderError,
    WorkerGroup,
    agree_on_state,
    shared_folder,
    worker_folder,
)


def draw(batches):
    """Each batch with the first MXNet random number drawn after it was handed out."""
    return [(batch, mx.nd.random.uniform(shape=(1,)).asscalar()) for batch in batches]


@pytest.mark.parametrize("start, shard", [(0, (0, 1)), (1, (1, 2))])
def test_loader_workers_give_identical_batches(pseudo_dir, start, shard):  # noqa: F811
    ds = make_set(pseudo_dir)

    def epoch():
        return EpochBatches(ds, 2, seed=5, stage=1, epoch=0, start_iteration=start, shard=shard)

    inline = draw(epoch())
    background = draw(BackgroundBatches(epoch(), num_workers=2, prefetch=3))
    assert len(BackgroundBatches(epoch(), 2)) == len(inline) == len(background) > 0
    for (a, seed_a), (b, seed_b) in zip(inline, background):
        assert seed_a == seed_b  # the dropout generator was reseeded for the same step
        for x, y in zip(a, b):
            assert x.dtype == y.dtype
            np.testing.assert_array_equal(x, y)


def test_a_worker_error_reaches_the_trainer(pseudo_dir):  # noqa: F811
    ds = make_set(pseudo_dir)
    (pseudo_dir / "labels" / "city" / "t3.png").unlink()
    with pytest.raises(FileNotFoundError, match="t3.png"):
        list(BackgroundBatches(EpochBatches(ds, 2, seed=5, stage=1, epoch=0), num_workers=2))
    with pytest.raises(ValueError, match="num_workers"):
        BackgroundBatches(EpochBatches(ds, 2, seed=5, stage=1, epoch=0), num_workers=-1)


class FakeChannel:
    """Stands for the kvstore of one of several threads: a barrier and rank 0's broadcast value."""

    def __init__(self, rank, barrier, values):
        self.rank, self._wait, self._values = rank, barrier, values

    def barrier(self):
        self._wait.wait(timeout=20)

    def broadcast(self, value):
        if self.rank == 0:
            self._values["token"] = value
        self.barrier()
        return self._values["token"]


def join_all(roots, states, timeout=1.0):
    """Join one WorkerGroup per root in threads; each thread's result or exception."""
    barrier, values, results = threading.Barrier(len(roots)), {}, [None] * len(roots)

    def work(rank):
        group = WorkerGroup(rank, len(roots), roots[rank], FakeChannel(rank, barrier, values))
        try:
            results[rank] = group.join(states[rank], timeout=timeout)
        except SharedFolderError as err:
            results[rank] = err

    threads = [threading.Thread(target=work, args=(r,)) for r in range(len(roots))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_workers_sharing_the_folder_agree_on_the_state(tmp_path):
    state = {"stage": 2, "round": 1, "phase": "pseudo", "epoch": 0, "iteration": 0}
    assert join_all([tmp_path, tmp_path], [state, state]) == [state, state]
    done_step_one = dict(state, phase="train")  # this worker's checkpoint was written after step 1
    assert join_all([tmp_path, tmp_path], [state, done_step_one]) == [state, state]
    assert sorted(p.name for p in (tmp_path / "workers").iterdir()) == ["rank0.json", "rank1.json"]


def test_workers_without_a_shared_folder_are_told_what_to_do(tmp_path):
    state = {"round": 0, "phase": "pseudo"}
    own = [tmp_path / "host_a", tmp_path / "host_b"]
    # A marker of rank 1 left in host A's folder by an earlier run must not count.
    (own[0] / "workers").mkdir(parents=True)
    (own[0] / "workers" / "rank1.json").write_text(json.dumps({"rank": 1, "host": "x", "token": -1}))
    results = join_all(own, [state, state], timeout=0.5)
    assert all(isinstance(r, SharedFolderError) for r in results)
    assert "files of worker(s) 1" in str(results[0]) and str(own[0] / "workers") in str(results[0])
    assert "files of worker(s) 0" in str(results[1]) and "share the output folder" in str(results[1])


def test_workers_resumed_from_different_steps_are_refused():
    a = {"round": 1, "phase": "train", "epoch": 0, "iteration": 200}
    b = {"round": 1, "phase": "train", "epoch": 0, "iteration": 400}
    with pytest.raises(SharedFolderError, match="copy checkpoints/latest.params"):
        agree_on_state([a, b])
    assert agree_on_state([a, a]) == a
    start = dict(a, iteration=0)
    with pytest.raises(SharedFolderError):  # both past step 1 but at different places
        agree_on_state([start, a])
    assert agree_on_state([start, start]) == start  # nobody needs step 1 again


def test_worker_folders_and_their_shared_folder(tmp_path):
    assert worker_folder(tmp_path, 0) == tmp_path and worker_folder(tmp_path, 2) == tmp_path / "worker2"
    for rank in (0, 3):
        assert shared_folder(worker_folder(tmp_path, rank), rank) == tmp_path
    with pytest.raises(ValueError, match="channel"):
        WorkerGroup(0, 2, tmp_path)


def test_map_reduce_reduces_once_and_every_worker_reads_the_result(tmp_path):
    barrier, values, results, reduced = threading.Barrier(2), {}, [None, None], []

    def work(rank):
        group = WorkerGroup(rank, 2, tmp_path, FakeChannel(rank, barrier, values))

        def shard():
            time.sleep(0.2 * (1 - rank))  # rank 0 finishes last: nobody may reduce before it
            (tmp_path / f"part{rank}").write_text(str(10 + rank))

        def combine():
            reduced.append(rank)
            total = sum(int((tmp_path / f"part{r}").read_text()) for r in range(2))
            (tmp_path / "stats.json").write_text(json.dumps({"total": total}))

        results[rank] = group.map_reduce(shard, combine, tmp_path / "stats.json", timeout=2)

    threads = [threading.Thread(target=work, args=(r,)) for r in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert reduced == [0] and results == [{"total": 21}, {"total": 21}]


def test_weights_trained_with_loader_workers_are_bit_identical(pseudo_dir):  # noqa: F811
    ds = make_set(pseudo_dir)

    def train(workers):
        mx.random.seed(3)
        net = MLSLNet(19, width=0.0625, with_classifier=True)
        init_params(net, ctx=mx.cpu())
        trainer = build_trainer(net, [mx.cpu()], lr=0.01)
        initial.append(net.seg_head.linear.weight.data().asnumpy().tobytes())
        batches = EpochBatches(ds, 2, seed=5, stage=1, epoch=0)
        train_epoch(net, trainer, BackgroundBatches(batches, workers), [mx.cpu()],
                    loss=LossSettings(use_cls=True), progress=False, log_every=0)
        return {name: p.data().asnumpy().tobytes() for name, p in net._collect_params_with_prefix().items()}

    initial = []
    inline, background = train(0), train(2)
    assert initial[0] == initial[1] and inline["seg_head.linear.weight"] != initial[0]  # it trained
    assert inline.keys() == background.keys()
    assert all(inline[name] == background[name] for name in inline)


class RecordingNet(nn.HybridBlock):
    """1x1 conv + softmax that records the device and batch size of every call."""

    def __init__(self):
        super().__init__()
        self.num_classes, self.calls = 3, []
        self.conv = nn.Conv2D(3, 1, in_channels=3)

    def hybrid_forward(self, F, x):
        return self.conv(x)

    def predict(self, x, flip=False):
        self.calls.append((str(x.context), x.shape[0]))
        prob = mx.nd.softmax(self(x), axis=1)
        return 0.5 * (prob + mx.nd.softmax(self(x.flip(axis=3)), axis=1).flip(axis=3)) if flip else prob


def test_si_images_are_split_over_the_devices():
    contexts = [mx.cpu(0), mx.cpu(1)]
    net = RecordingNet()
    net.initialize(mx.init.Normal(1.0), ctx=contexts)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, size=shape, dtype=np.uint8)
              for shape in [(20, 30, 3), (20, 30, 3), (24, 24, 3), (20, 30, 3)]]
    alone = [single_inference(net, image, mx.cpu(0), flip=True) for image in images]
    net.calls.clear()
    shared = single_inference_many(net, images, contexts, flip=True)
    assert len(shared) == len(images)
    for a, b in zip(alone, shared):
        assert a.shape == b.shape and np.array_equal(a, b)
    assert {size for _, size in net.calls} == {1}  # one image per device and call
    assert {device for device, _ in net.calls} == {"cpu(0)", "cpu(1)"}


def test_rank0_file_of_a_worker(tmp_path):
    group = WorkerGroup(1, 2, tmp_path, channel=object())
    own = worker_folder(tmp_path, 1)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "round_00.params").write_bytes(b"rank 0")
    assert group.rank0_file(own / "checkpoints" / "round_00.params", own) == \
        tmp_path / "checkpoints" / "round_00.params"
    assert group.rank0_file(Path("/data/source.params"), own) == Path("/data/source.params")
    with pytest.raises(SharedFolderError, match="round_01.params"):
        group.rank0_file(own / "checkpoints" / "round_01.params", own, timeout=0.1)

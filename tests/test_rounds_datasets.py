"""Step 2's training set: seeded source subsets, weak-label vectors, resumable batch streams."""
import json

import numpy as np
import pytest
from PIL import Image

from mlsl_gluon.config import source_portion
from mlsl_gluon.data import TrainTransform
from mlsl_gluon.training.datasets import (
    EpochBatches,
    SelfTrainingSet,
    num_batches,
    present_classes,
    source_subset,
)


def test_source_subsets_extend_each_other():
    subsets = [set(source_subset(1000, source_portion(r), seed=3).tolist()) for r in range(15)]
    assert [len(s) for s in subsets[:3]] == [30, 33, 35]
    assert len(subsets[-1]) == 60
    assert all(a <= b for a, b in zip(subsets, subsets[1:]))
    assert subsets[0] != set(source_subset(1000, 0.03, seed=4).tolist())
    assert len(source_subset(5, 0.03, seed=0)) == 1


def test_present_classes_is_the_image_level_label():
    label = np.array([[0, 0, 255], [3, 3, 18]], dtype=np.uint8)
    c = present_classes(label, 19)
    assert c.dtype == np.float32 and c.shape == (19,)
    assert np.flatnonzero(c).tolist() == [0, 3, 18]


class TinySource:
    """Five 40x40 images whose label is the image index everywhere."""

    names = [f"s{i}" for i in range(5)]

    def __len__(self):
        return 5

    def __getitem__(self, i):
        image = np.full((40, 40, 3), 10 * i, dtype=np.uint8)
        return image, np.full((40, 40), i, dtype=np.uint8), self.names[i]


class TinyTarget(TinySource):
    names = [f"city/t{i}" for i in range(5)]

    def __getitem__(self, i):
        return np.full((40, 40, 3), 50 + i, dtype=np.uint8), None, self.names[i]


@pytest.fixture
def pseudo_dir(tmp_path):
    for i, name in enumerate(TinyTarget.names):
        path = tmp_path / "labels" / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        label = np.full((40, 40), 255, dtype=np.uint8)
        label[:20] = 7 + i
        Image.fromarray(label).save(path)
    weak = {name: [int(c == 7 + i) for c in range(19)] for i, name in enumerate(TinyTarget.names)}
    (tmp_path / "weak_labels.json").write_text(json.dumps(weak))
    return tmp_path


def make_set(pseudo_dir, per_crop=None):
    return SelfTrainingSet(TinySource(), [1, 3], TrainTransform(crop_size=32), 19, target=TinyTarget(),
                           pseudo_dir=pseudo_dir, with_weak_labels=True, per_crop_weak_labels=per_crop)


def test_union_of_source_subset_and_pseudo_labelled_targets(pseudo_dir):
    ds = make_set(pseudo_dir)
    assert len(ds) == 7
    rng = np.random.default_rng(0)
    img, label8, weak = ds.load(0, rng)  # source image 1: GT class 1 everywhere
    assert img.shape == (3, 32, 32) and label8.shape == (4, 4)
    assert np.flatnonzero(weak).tolist() == [1]
    img, label8, weak = ds.load(2 + 4, rng)  # target image 4: pseudo-label 11 in the top half
    assert set(np.unique(label8)) <= {11.0, 255.0} and np.flatnonzero(weak).tolist() == [11]


def test_per_crop_weak_labels_option(pseudo_dir):
    ds = make_set(pseudo_dir, per_crop=lambda label8, c: np.eye(c, dtype=np.float32)[2])
    assert np.flatnonzero(ds.load(0, np.random.default_rng(0))[2]).tolist() == [2]


def test_missing_weak_label_entry_is_an_error(pseudo_dir):
    (pseudo_dir / "weak_labels.json").write_text(json.dumps({"city/t0": [0] * 19}))
    with pytest.raises(ValueError, match="no entry for 4 target images"):
        make_set(pseudo_dir)
    (pseudo_dir / "weak_labels.json").unlink()
    with pytest.raises(FileNotFoundError, match="did not finish"):
        make_set(pseudo_dir)


def test_batches_resume_identically(pseudo_dir):
    ds = make_set(pseudo_dir)
    full = list(EpochBatches(ds, 2, seed=5, stage=1, epoch=0))
    assert len(full) == num_batches(7, 2) == 4 and full[-1][0].shape[0] == 1
    tail = EpochBatches(ds, 2, seed=5, stage=1, epoch=0, start_iteration=2)
    assert len(tail) == 2
    for a, b in zip(full[2:], tail):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    other_epoch = list(EpochBatches(ds, 2, seed=5, stage=1, epoch=1))
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(full, other_epoch))
    # Every item appears exactly once per epoch.
    assert sorted(np.concatenate([b[2].argmax(axis=1) for b in full]).tolist()) == [1, 3, 7, 8, 9, 10, 11]


def test_distributed_workers_split_each_global_batch(pseudo_dir):
    ds = make_set(pseudo_dir)
    workers = [list(EpochBatches(ds, 2, seed=5, stage=1, epoch=0, shard=(r, 2))) for r in range(2)]
    assert [len(w) for w in workers] == [2, 2]  # ceil(7 / (2 * 2)) steps each, equal counts
    assert all(b[0].shape[0] == 2 for w in workers for b in w)
    classes = np.concatenate([b[2].argmax(axis=1) for w in workers for b in w]).tolist()
    assert sorted(set(classes)) == [1, 3, 7, 8, 9, 10, 11] and len(classes) == 8  # one item wraps around
    with pytest.raises(ValueError, match="shard must be"):
        EpochBatches(ds, 2, seed=5, stage=1, epoch=0, shard=(2, 2))


def test_run_folder_drops_a_half_written_log_line(tmp_path):
    from mlsl_gluon.config import load_config
    from mlsl_gluon.training.run_folder import RunFolder

    config = load_config()
    run = RunFolder(tmp_path / "run", config)
    run.log("train", iteration=0, seg=1.0)
    with open(run.path / "metrics.jsonl", "a") as stream:
        stream.write('{"event": "train", "iter')  # killed mid-write
    again = RunFolder(tmp_path / "run", config, resume=True)
    again.log("train", iteration=1, seg=0.5)
    assert [r["iteration"] for r in again.read_log("train")] == [0, 1]
    assert len(json.loads((run.path / "run.json").read_text())) == 2  # one provenance record per start

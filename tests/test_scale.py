"""Scaling step 1 and step 2 out: background loader workers give the batches of the training
process itself, and MXNet's dropout generator is reseeded per step wherever batches come from."""
import mxnet as mx
import numpy as np
import pytest
from test_rounds_datasets import make_set, pseudo_dir  # noqa: F401  (fixture)

from mlsl_gluon.training.datasets import EpochBatches
from mlsl_gluon.training.loader import BackgroundBatches


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

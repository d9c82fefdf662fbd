"""evaluate() and the flip / multi-scale inference behind it."""
import mxnet as mx
import numpy as np
import pytest
from evaluation_helpers import FRAME, OracleNet, make_cityscapes, make_net, oracle_image
from PIL import Image

from mlsl_gluon.data import Cityscapes, normalize
from mlsl_gluon.data.classes import LABEL_ID_TO_TRAIN_ID, TRAIN19_TO_TRAIN16
from mlsl_gluon.evaluation import (
    ConfusionMatrix,
    evaluate,
    evaluation_summary,
    multi_scale_probabilities,
    predict_labels,
)


def _corrupt(train_ids, num_classes, rng):
    """A prediction with ~30 % wrong pixels and a class on every ignored pixel."""
    pred = train_ids.copy()
    pred[pred == 255] = 3
    wrong = rng.random(pred.shape) < 0.3
    pred[wrong] = rng.integers(0, num_classes, size=int(wrong.sum()))
    return pred


@pytest.fixture
def oracle_val(tmp_path):
    """Cityscapes val whose images OracleNet segments as known corrupted predictions."""
    expected = {}

    def draw(label_ids, rng):
        pred = _corrupt(LABEL_ID_TO_TRAIN_ID[label_ids], 19, rng)
        expected[len(expected)] = pred
        return oracle_image(pred)

    labels = make_cityscapes(tmp_path / "cs", image_fn=draw)
    preds = {name: expected[i] for i, name in enumerate(labels)}
    return tmp_path / "cs", labels, preds


def test_evaluate_known_answer_devices_and_shards(oracle_val, tmp_path):
    root, labels, preds = oracle_val
    dataset = Cityscapes(root, split="val", num_classes=19)
    expected = ConfusionMatrix(19)
    for name, label_ids in labels.items():
        expected.update(preds[name], LABEL_ID_TO_TRAIN_ID[label_ids])
    assert 0.1 < expected.miou() < 0.9  # the corruption makes the answer non-trivial

    net = OracleNet(19)
    got = evaluate(net, dataset, mx.cpu(), flip=True, progress=False,
                   prediction_dir=tmp_path / "pred")
    assert got == expected
    assert net.calls == 2 * len(dataset)  # each image and its flip
    for name, pred in preds.items():
        written = np.array(Image.open(tmp_path / "pred" / f"{name}.png"))
        np.testing.assert_array_equal(LABEL_ID_TO_TRAIN_ID[written], pred)

    two_devices = evaluate(OracleNet(19), dataset, [mx.cpu(0), mx.cpu(1)], progress=False)
    assert two_devices == expected
    shards = [evaluate(OracleNet(19), dataset, mx.cpu(), shard=(i, 2), progress=False) for i in range(2)]
    assert shards[0] + shards[1] == expected and shards[0] != expected


def test_evaluate_16_classes_reports_miou13(tmp_path):
    def draw(label_ids, rng):
        ids16 = TRAIN19_TO_TRAIN16[LABEL_ID_TO_TRAIN_ID[label_ids]]
        return oracle_image(np.where(ids16 == 255, 0, ids16))

    labels = make_cityscapes(tmp_path / "cs", image_fn=draw)
    dataset = Cityscapes(tmp_path / "cs", split="val", num_classes=16)
    matrix = evaluate(OracleNet(16), dataset, mx.cpu(), flip=False, progress=False)
    expected = ConfusionMatrix(16)
    for label_ids in labels.values():
        gt = TRAIN19_TO_TRAIN16[LABEL_ID_TO_TRAIN_ID[label_ids]]
        expected.update(np.where(gt == 255, 0, gt), gt)
    assert matrix == expected
    summary = evaluation_summary(matrix)
    assert summary["miou"] == 1.0 and summary["miou13"] == 1.0
    assert summary["iou"][13] is None  # bus never drawn: absent from both -> NaN -> None


def test_flip_and_scales_on_the_real_network():
    net = make_net(19)
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=FRAME + (3,), dtype=np.uint8)
    x = mx.nd.array(normalize(image)[None])
    plain = net.predict(x)
    np.testing.assert_array_equal(multi_scale_probabilities(net, x, flip=False).asnumpy(), plain.asnumpy())

    flipped_avg = multi_scale_probabilities(net, x, flip=True)
    # At a width that is a multiple of 8 (no padding to mirror along) flip averaging makes the
    # prediction exactly mirror-symmetric; the plain one is not. (With padding, the released
    # protocol mirrors the padded image: tests/test_full_resolution.py.)
    x8 = x[:, :, :40, :56]
    sym = multi_scale_probabilities(net, x8, flip=True)
    mirror = multi_scale_probabilities(net, x8.flip(axis=3), flip=True).flip(axis=3)
    np.testing.assert_allclose(sym.asnumpy(), mirror.asnumpy(), atol=1e-6)
    plain_mirror = net.predict(x8.flip(axis=3)).flip(axis=3)
    assert np.abs(net.predict(x8).asnumpy() - plain_mirror.asnumpy()).max() > 1e-3

    multi = multi_scale_probabilities(net, x, flip=False, scales=(0.6, 1.0))
    assert multi.shape == (1, 19) + FRAME
    np.testing.assert_allclose(multi.sum(axis=1).asnumpy(), 1.0, atol=1e-5)
    assert np.abs(multi.asnumpy() - plain.asnumpy()).max() > 1e-4
    same = multi_scale_probabilities(net, x, flip=False, scales=(1.0, 1.0))
    np.testing.assert_allclose(same.asnumpy(), plain.asnumpy(), atol=1e-6)

    labels = predict_labels(net, [image], [mx.cpu()], flip=True)
    np.testing.assert_array_equal(labels[0], flipped_avg[0].argmax(axis=0).asnumpy())
    assert labels[0].dtype == np.uint8 and len(np.unique(labels[0])) > 1
    with pytest.raises(ValueError, match="scales must be positive"):
        multi_scale_probabilities(net, x, scales=(0.0,))
    with pytest.raises(ValueError, match="2 images for 1 devices"):
        predict_labels(net, [image, image], [mx.cpu()])


class _ListDataset:
    num_classes = 19

    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_evaluate_rejects_bad_items():
    image = np.zeros((8, 10, 3), np.uint8)
    with pytest.raises(ValueError, match="frame_a: label shape"):
        evaluate(OracleNet(19), _ListDataset([(image, np.zeros((8, 9), np.uint8), "frame_a")]),
                 mx.cpu(), progress=False)
    with pytest.raises(ValueError, match="frame_b: the dataset has no ground-truth"):
        evaluate(OracleNet(19), _ListDataset([(image, None, "frame_b")]), mx.cpu(), progress=False)
    with pytest.raises(ValueError, match="shard"):
        evaluate(OracleNet(19), _ListDataset([]), mx.cpu(), shard=(2, 2), progress=False)

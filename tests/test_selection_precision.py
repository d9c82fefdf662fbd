"""What self-training rests on: class-balanced pseudo-labels are more precise than the plain argmax.

A tiny network is trained for a few seconds on generated source frames, then labels generated
target frames (another palette, light, noise and camera). The pseudo-labels kept by the
class-balanced rule must be right more often than the argmax of the same probabilities over all
pixels. The check itself is shown to fail when the selection is broken: thresholds ~0 (every
pixel kept), or pixels kept at random in the same number (the ranking by confidence lost). A
threshold of exactly 0 is not "broken" here: the package counts k_c <= 0 as 1 (CBST's rule), which
keeps only saturated pixels.
"""
import mxnet as mx
import numpy as np
import pytest

from mlsl_gluon.data.classes import LABEL_ID_TO_TRAIN_ID
from mlsl_gluon.data.transforms import TrainTransform
from mlsl_gluon.demo.synthetic import make_frame
from mlsl_gluon.model import MLSLNet, init_params
from mlsl_gluon.pseudo_labels import class_balanced_thresholds, select_pseudo_labels
from mlsl_gluon.pseudo_labels.inference import single_inference
from mlsl_gluon.training.engine import build_trainer, train_epoch

SIZE = (64, 128)
PORTION = 0.3
IGNORE = 255


def _frames(stream, domain, count):
    frames = [make_frame(11, stream, i, domain, SIZE) for i in range(count)]
    return [(image, LABEL_ID_TO_TRAIN_ID[label_ids]) for image, label_ids, _ in frames]


@pytest.fixture(scope="module")
def target_predictions():
    """Probability maps of a briefly trained tiny network on target frames, and their truth."""
    mx.random.seed(3)
    net = MLSLNet(19, width=0.03125, with_classifier=False, freeze_bn=False)
    init_params(net, ctx=mx.cpu())
    net.hybridize()
    transform = TrainTransform(crop_size=64, scale_range=(0.8, 1.2), flip=True)
    source = _frames("source", "source", 16)
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(90):
        items = [transform(*source[i], rng=rng) for i in rng.integers(0, len(source), 8)]
        batches.append((np.stack([a for a, _ in items]), np.stack([b for _, b in items]), None))
    trainer = build_trainer(net, [mx.cpu()], lr=0.05, momentum=0.9, wd=5e-4)
    train_epoch(net, trainer, batches, [mx.cpu()], progress=False, log_every=0)
    target = _frames("target_train", "target", 6)
    probs = [single_inference(net, image, [mx.cpu()], flip=False) for image, _ in target]
    return probs, [truth for _, truth in target]


def _precision(labels, truths):
    right = selected = 0
    for label, truth in zip(labels, truths):
        keep = (label != IGNORE) & (truth != IGNORE)
        right += int((label[keep] == truth[keep]).sum())
        selected += int(keep.sum())
    return right / selected, selected / sum(int((t != IGNORE).sum()) for t in truths)


def assert_selection_beats_argmax(probs, truths, selected):
    """Pseudo-labels ``selected`` are >= 5 points more precise than the argmax of every pixel."""
    precision, coverage = _precision(selected, truths)
    argmax_precision, _ = _precision([p.argmax(0).astype(np.uint8) for p in probs], truths)
    assert 0.0 < coverage < 1.0, coverage
    assert precision >= argmax_precision + 0.05, (precision, argmax_precision, coverage)


def test_class_balanced_pseudo_labels_are_more_precise_than_argmax(target_predictions):
    probs, truths = target_predictions
    argmax_precision, _ = _precision([p.argmax(0).astype(np.uint8) for p in probs], truths)
    # The network is better than chance on the target but far from perfect: selection has work to do.
    assert 0.3 < argmax_precision < 0.95, argmax_precision
    thresholds = class_balanced_thresholds(probs, PORTION)
    assert_selection_beats_argmax(probs, truths, [select_pseudo_labels(p, thresholds) for p in probs])


def test_the_check_fails_when_selection_keeps_every_pixel(target_predictions):
    probs, truths = target_predictions
    everything = [select_pseudo_labels(p, np.full(19, 1e-12)) for p in probs]
    with pytest.raises(AssertionError):
        assert_selection_beats_argmax(probs, truths, everything)


def test_the_check_fails_when_selection_ignores_confidence(target_predictions):
    probs, truths = target_predictions
    thresholds = class_balanced_thresholds(probs, PORTION)
    rng = np.random.default_rng(0)
    shuffled = []
    for p in probs:
        kept = (select_pseudo_labels(p, thresholds) != IGNORE).ravel()
        label = p.argmax(0).astype(np.uint8)
        label.ravel()[~rng.permutation(kept)] = IGNORE  # as many pixels, chosen at random
        shuffled.append(label)
    with pytest.raises(AssertionError):
        assert_selection_beats_argmax(probs, truths, shuffled)

"""ConfusionMatrix: known answers, edge cases, persistence, and agreement with the official
Cityscapes evaluator (cityscapesscripts) on predictions built from the real sample frame."""
import json

import numpy as np
import pytest
from evaluation_helpers import official_class_iou
from PIL import Image

from mlsl_gluon.data.classes import CITYSCAPES_19_NAMES, LABEL_ID_TO_TRAIN_ID, MIOU13_CLASSES
from mlsl_gluon.evaluation import ConfusionMatrix, intersection_over_union
from mlsl_gluon.evaluation.label_files import save_label_id_png, train_id_to_label_id_lut


def test_iou_known_answer():
    gt = np.array([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 2, 0]])
    cm = ConfusionMatrix(4).update(pred, gt)
    # class 0: TP 1, FN 1 (->1), FP 1 (2->0) -> 1/3; class 1: TP 2, FP 1 -> 2/3;
    # class 2: TP 1, FN 1 -> 1/2; class 3: absent from both -> NaN; ignored gt pixels not counted
    np.testing.assert_allclose(cm.iou(), [1 / 3, 2 / 3, 1 / 2, np.nan])
    assert cm.matrix.sum() == 6
    assert cm.miou() == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert cm.miou(classes=[0, 2]) == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert np.isnan(cm.miou(classes=[3]))
    assert cm.pixel_accuracy() == pytest.approx(4 / 6)


def test_prediction_outside_classes_counts_as_miss_only():
    gt = np.array([0, 0, 1, 1])
    pred = np.array([0, 255, 1, -3])
    cm = ConfusionMatrix(2).update(pred, gt)
    # each invalid prediction is a false negative of its true class, a false positive of none
    np.testing.assert_allclose(cm.iou(), [1 / 2, 1 / 2])
    assert cm.matrix[:, 2].tolist() == [1, 1]


def test_class_predicted_but_absent_from_gt_has_zero_iou():
    cm = ConfusionMatrix(3).update(np.array([0, 2]), np.array([0, 0]))
    np.testing.assert_allclose(cm.iou(), [0.5, np.nan, 0.0])


def test_update_rejects_bad_input():
    cm = ConfusionMatrix(19)
    with pytest.raises(ValueError, match="shape"):
        cm.update(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"\[33\].*train ids"):
        cm.update(np.zeros(3), np.array([0, 33, 255]))
    with pytest.raises(ValueError):
        ConfusionMatrix(0)


def test_merge_equals_single_pass_and_checks_compatibility():
    rng = np.random.default_rng(0)
    gts = [rng.integers(0, 6, size=(7, 9)) for _ in range(4)]
    preds = [rng.integers(0, 7, size=(7, 9)) for _ in range(4)]
    whole = ConfusionMatrix(6)
    for p, g in zip(preds, gts):
        whole.update(p, g)
    shard_a, shard_b = ConfusionMatrix(6), ConfusionMatrix(6)
    for i, (p, g) in enumerate(zip(preds, gts)):
        (shard_a if i % 2 else shard_b).update(p, g)
    assert shard_a + shard_b == whole
    assert shard_a.copy().merge(shard_b) == whole
    assert shard_a != whole
    with pytest.raises(ValueError, match="16-class"):
        ConfusionMatrix(19).merge(ConfusionMatrix(16))
    with pytest.raises(TypeError):
        whole.merge(np.zeros((6, 7)))


def test_save_load_round_trip_and_corruption(tmp_path):
    cm = ConfusionMatrix(3, ignore_label=250).update(np.array([0, 1, 2, 9]), np.array([0, 1, 1, 2]))
    path = tmp_path / "cm.json"
    cm.save(path)
    back = ConfusionMatrix.load(path)
    assert back == cm and back.ignore_label == 250
    np.testing.assert_array_equal(back.iou(), cm.iou())

    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(ValueError, match="junk.json"):
        ConfusionMatrix.load(tmp_path / "junk.json")
    (tmp_path / "other.json").write_text(json.dumps({"a": 1}))
    with pytest.raises(ValueError, match="other.json.*not a confusion matrix"):
        ConfusionMatrix.load(tmp_path / "other.json")
    payload = json.loads(path.read_text())
    payload["matrix"] = payload["matrix"][:2]
    (tmp_path / "cut.json").write_text(json.dumps(payload))
    with pytest.raises(ValueError, match="cut.json.*shape"):
        ConfusionMatrix.load(tmp_path / "cut.json")


def test_intersection_over_union_is_pure():
    conf = np.array([[3, 1, 0], [0, 2, 1]])
    np.testing.assert_allclose(intersection_over_union(conf), [3 / 4, 2 / 4])


def test_train_id_to_label_id_lut():
    lut19 = train_id_to_label_id_lut(19)
    # road, sky, bicycle are label ids 7, 23, 33; unknown train ids -> 0 (unlabeled)
    assert (lut19[0], lut19[10], lut19[18], lut19[255], lut19[19]) == (7, 23, 33, 0, 0)
    np.testing.assert_array_equal(LABEL_ID_TO_TRAIN_ID[lut19[:19]], np.arange(19))
    lut16 = train_id_to_label_id_lut(16)
    assert (lut16[9], lut16[15]) == (23, 33)  # sky, bicycle in the 16-class order


# ---- agreement with cityscapesscripts -------------------------------------------------------

def _corruptions(gt_train):
    """Known corruptions of the ground truth, as 19-class train-id predictions."""
    h, w = gt_train.shape
    relabel = gt_train.copy()
    relabel[h // 2: h // 2 + 180, w // 4: w // 2] = 13  # a car-shaped box across road/sidewalk
    shifted = np.roll(gt_train, 23, axis=1)
    shifted[:, :23] = 0
    erased = gt_train.copy()
    erased[erased == 1] = 0  # sidewalk never predicted: IoU 0, road gains false positives
    erased[: h // 8] = 255  # top strip left without a class: misses only
    erased[gt_train == 255] = 10  # predictions on ignored pixels must not count
    return {"relabel": relabel, "shift": shifted, "erase": erased}


def test_agrees_with_official_cityscapes_evaluator(real_samples, tmp_path):
    gt_file = real_samples / "cityscapes/gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png"
    gt_train = LABEL_ID_TO_TRAIN_ID[np.array(Image.open(gt_file))]
    preds = _corruptions(gt_train)

    combined = ConfusionMatrix(19)
    files = []
    for name, pred in preds.items():
        path = tmp_path / "results" / f"aachen_000000_000019_{name}.png"
        save_label_id_png(path, pred, 19)
        files.append(path)
        ours = ConfusionMatrix(19).update(pred, gt_train)
        combined.update(pred, gt_train)
        theirs = official_class_iou([path], [gt_file], tmp_path)
        theirs = np.array([theirs[n] for n in CITYSCAPES_19_NAMES], dtype=np.float64)
        np.testing.assert_array_equal(np.isnan(ours.iou()), np.isnan(theirs), err_msg=name)
        np.testing.assert_allclose(ours.iou(), theirs, atol=1e-6, rtol=0, err_msg=name)

    # summed over several images (the official evaluator accumulates one matrix too)
    theirs = official_class_iou(files, [gt_file] * len(files), tmp_path)
    theirs = np.array([theirs[n] for n in CITYSCAPES_19_NAMES], dtype=np.float64)
    np.testing.assert_allclose(combined.iou(), theirs, atol=1e-6, rtol=0)
    # the corruptions did what they should: sidewalk erased -> 0 in "erase", classes absent
    # from the frame (e.g. train) are NaN, and the evaluation is not trivially perfect
    erase_iou = ConfusionMatrix(19).update(preds["erase"], gt_train).iou()
    assert erase_iou[CITYSCAPES_19_NAMES.index("sidewalk")] == 0.0
    assert np.isnan(erase_iou[CITYSCAPES_19_NAMES.index("train")])
    assert 0.3 < combined.miou() < 0.95


def test_miou13_subset_on_16_classes():
    gt = np.arange(16).repeat(4)
    pred = gt.copy()
    pred[np.isin(gt, [3, 4, 5])] = 0  # wall, fence, pole never right (the classes mIoU* drops)
    cm = ConfusionMatrix(16).update(pred, gt)
    # road: TP 4, FP 12 -> 1/4; wall/fence/pole: 0; the other 12 classes: 1
    assert MIOU13_CLASSES == (0, 1, 2, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
    assert cm.miou() == pytest.approx((0.25 + 12) / 16)
    assert cm.miou(MIOU13_CLASSES) == pytest.approx((0.25 + 12) / 13)

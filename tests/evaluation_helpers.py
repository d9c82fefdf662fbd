"""Fixtures shared by the evaluation / predict / export tests: a tiny Cityscapes tree in the real
layout, and reduced-width networks saved in each weight-file format the CLI accepts."""
import copy
from pathlib import Path

import mxnet as mx
import numpy as np
from PIL import Image

from mlsl_gluon.data import MEAN, STD
from mlsl_gluon.model import MLSLNet, ademxapp_param_map, init_params, save_weights

WIDTH = 1 / 16
# Odd, non-square frames: exercise the stride-8 rounding and the resize back to native size.
FRAME = (45, 61)
FRAMES = {"val": [("lindau", "lindau_000000_000019"), ("lindau", "lindau_000001_000019"),
                  ("munster", "munster_000002_000019")]}
# Class k of the oracle images is drawn with red value ORACLE_STEP * k.
ORACLE_STEP = 10


def random_label_ids(rng, shape=FRAME):
    """Cityscapes label-id map with blocks of several classes and some ignored ids (0, 4)."""
    ids = np.array([7, 8, 11, 21, 23, 24, 26, 0, 4], dtype=np.uint8)
    coarse = rng.integers(0, len(ids), size=(shape[0] // 5 + 1, shape[1] // 5 + 1))
    return ids[np.kron(coarse, np.ones((5, 5), dtype=np.int64))[: shape[0], : shape[1]]]


def make_cityscapes(root, seed=0, image_fn=None):
    """Write leftImg8bit/val and gtFine/val in the Cityscapes layout under ``root``.

    ``image_fn(label_ids, rng) -> uint8 RGB`` draws each image (default: random noise).
    Returns ``{name: label_ids}``.
    """
    rng = np.random.default_rng(seed)
    written = {}
    for split, frames in FRAMES.items():
        for city, frame in frames:
            label_ids = random_label_ids(rng)
            image = (image_fn(label_ids, rng) if image_fn is not None
                     else rng.integers(0, 256, size=FRAME + (3,), dtype=np.uint8))
            img_path = Path(root) / "leftImg8bit" / split / city / f"{frame}_leftImg8bit.png"
            gt_path = Path(root) / "gtFine" / split / city / f"{frame}_gtFine_labelIds.png"
            img_path.parent.mkdir(parents=True, exist_ok=True)
            gt_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(img_path)
            Image.fromarray(label_ids, mode="L").save(gt_path)
            written[f"{city}/{frame}"] = label_ids
    return written


def make_net(num_classes=19, with_classifier=False, seed=0):
    """An initialised MLSLNet at reduced width, deterministic for a seed."""
    mx.random.seed(seed)
    net = MLSLNet(num_classes=num_classes, width=WIDTH, with_classifier=with_classifier)
    init_params(net, ctx=mx.cpu())
    # Random init gives near-uniform outputs; larger head weights make the argmax vary.
    for param in net.seg_head.collect_params().values():
        param.set_data(param.data() * 8)
    return net


def save_ademxapp(net, path):
    """Write ``net`` as an ademxapp/CBST file: an nd.save dict of arg:/aux: keys."""
    mx.nd.save(str(path), {key: param.data() for key, param in ademxapp_param_map(net).items()})
    return path


def save_gluon(net, path):
    return save_weights(net, path)


class OracleNet:
    """Stand-in network whose ``predict`` reads the class from the image's red channel
    (value ORACLE_STEP * class), so evaluation results are known exactly."""

    def __init__(self, num_classes):
        self.num_classes = num_classes
        self.calls = 0

    def predict(self, x, flip=False):
        if flip:  # the mirror of the mirrored image's answer: the same answer
            return 0.5 * (self.predict(x) + self.predict(x.flip(axis=3)).flip(axis=3))
        self.calls += 1
        red = x[:, 0] * STD[0] + MEAN[0]  # back to [0, 1]
        cls = mx.nd.round(red * 255 / ORACLE_STEP)
        return mx.nd.one_hot(cls, self.num_classes).transpose((0, 3, 1, 2))


def oracle_image(train_ids):
    """RGB image that OracleNet segments as ``train_ids`` (values >= C draw an unknown class)."""
    image = np.zeros(train_ids.shape + (3,), dtype=np.uint8)
    image[..., 0] = np.minimum(train_ids.astype(np.int64) * ORACLE_STEP, 250)
    image[..., 1] = 128
    return image


def official_class_iou(pred_files, gt_files, tmp_path):
    """Run cityscapesscripts' pixel-level evaluator on file lists; {class name: IoU}.

    Uses the module's own argument object (copied), so no environment variable, home folder
    or result file is involved."""
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official

    args = copy.copy(official.args)
    args.evalInstLevelScore = False  # instance-weighted nIoU is not what we compare
    args.JSONOutput = False
    args.quiet = True
    args.exportFile = str(tmp_path / "official.json")  # not written: JSONOutput is off
    result = official.evaluateImgLists([str(p) for p in pred_files], [str(g) for g in gt_files], args)
    return result["classScores"]

"""Evaluating a network on Cityscapes val at native resolution (paper Sec. 4.2, SPEC section 6).

Each image is segmented whole by the network's full-resolution protocol (``net.predict``: for
``MLSLNet`` the released one, padding to a multiple of 8, flip averaging at stride 8 and PIL
bicubic x8), optionally over several scales (probabilities resized back to the native size
before averaging); the argmax is compared with the ground truth in one confusion matrix summed
over all images.
"""
import logging
from pathlib import Path

import mxnet as mx
import numpy as np
from tqdm import tqdm

from ..data import normalize
from .confusion import ConfusionMatrix
from .label_files import save_label_id_png

logger = logging.getLogger(__name__)


def _as_ctx_list(ctx):
    if ctx is None:
        return [mx.cpu()]
    if isinstance(ctx, mx.Context):
        return [ctx]
    ctx = list(ctx)
    if not ctx:
        raise ValueError("ctx must name at least one device")
    return ctx


def _normalized_input(image, ctx):
    """uint8 (H, W, 3) RGB -> (1, 3, H, W) float32 NDArray on ``ctx`` (SPEC section 2)."""
    return mx.nd.array(normalize(np.asarray(image))[None], ctx=ctx, dtype="float32")


def multi_scale_probabilities(net, x, flip=True, scales=(1.0,)):
    """Class probabilities of one image, averaged over flips and scales, at its native size.

    Parameters
    ----------
    net : HybridBlock
        Has ``predict(x, flip=...) -> (N, C, h, w)`` probabilities at the size of ``x``
        (``mlsl_gluon.model.MLSLNet``, which runs only the trunk and the segmentation head);
        parameters must live on ``x.context``.
    x : NDArray, shape (1, 3, H, W)
        Normalised image.
    flip : bool
        Passed to ``net.predict``: also segment the horizontally flipped image and average
        (``MLSLNet``: at stride 8, as the released evaluation).
    scales : sequence of float
        Input scales; each result is resized bilinearly to (H, W) before averaging.

    Returns
    -------
    NDArray, shape (1, C, H, W)
        Probabilities on ``x.context`` (asynchronous: not yet waited for).
    """
    if not scales:
        raise ValueError("scales must hold at least one scale")
    height, width = x.shape[2:]
    total = None
    for scale in scales:
        if scale <= 0:
            raise ValueError(f"scales must be positive, got {scale}")
        size = (max(1, int(round(height * scale))), max(1, int(round(width * scale))))
        xs = x if size == (height, width) else mx.nd.contrib.BilinearResize2D(
            x, height=size[0], width=size[1])
        prob = net.predict(xs, flip=flip)
        if size != (height, width):
            prob = mx.nd.contrib.BilinearResize2D(prob, height=height, width=width)
        total = prob if total is None else total + prob
    return total / len(scales)


def predict_labels(net, images, ctx, flip=True, scales=(1.0,)):
    """Argmax train ids of several images, one image per device, computed in parallel.

    Parameters
    ----------
    net : HybridBlock
        See :func:`multi_scale_probabilities`; parameters initialised on every context in ``ctx``.
    images : list of ndarray
        uint8 (H, W, 3) RGB images, at most ``len(ctx)`` of them.
    ctx : list of mx.Context
        Devices; image i runs on ``ctx[i]``.
    flip, scales
        As in :func:`multi_scale_probabilities`.

    Returns
    -------
    list of ndarray
        uint8 (H, W) predicted class index per image.
    """
    ctx = _as_ctx_list(ctx)
    if len(images) > len(ctx):
        raise ValueError(f"{len(images)} images for {len(ctx)} devices")
    # Issue every device's work before waiting on any: MXNet runs them concurrently.
    pending = [
        multi_scale_probabilities(net, _normalized_input(img, c), flip, scales).argmax(axis=1)
        for img, c in zip(images, ctx)
    ]
    return [p[0].asnumpy().astype(np.uint8) for p in pending]


def evaluate(net, dataset, ctx, flip=True, scales=(1.0,), num_classes=None, ignore_label=255,
             shard=None, prediction_dir=None, progress=True):
    """Segment every image of ``dataset`` and accumulate one confusion matrix.

    Parameters
    ----------
    net : HybridBlock
        Network with ``predict`` (see :func:`multi_scale_probabilities`), parameters on ``ctx``.
    dataset : Dataset
        Items ``(image uint8 (H, W, 3), label uint8 (H, W) train ids, name)``, e.g.
        ``mlsl_gluon.data.Cityscapes(root, 'val', num_classes)``; evaluated at native size.
    ctx : mx.Context or list of mx.Context
        Devices; images are spread over them, one per device at a time.
    flip : bool
        Average with the horizontally flipped image (SPEC section 6: on).
    scales : sequence of float
        Input scales averaged in probability space (default native size only).
    num_classes : int, optional
        Default ``dataset.num_classes``.
    ignore_label : int
        Ground-truth value that is not evaluated.
    shard : tuple (i, n), optional
        Evaluate only items i, i + n, i + 2n, ...; merge the shards' matrices with ``+``.
    prediction_dir : str or Path, optional
        Also write each prediction as ``<prediction_dir>/<name>.png`` holding Cityscapes label
        ids, the input format of the official cityscapesscripts evaluator.
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    ConfusionMatrix
    """
    ctx = _as_ctx_list(ctx)
    num_classes = int(num_classes if num_classes is not None else getattr(dataset, "num_classes", 0))
    if num_classes < 1:
        raise ValueError("num_classes not given and the dataset does not define it")
    indices = list(range(len(dataset)))
    if shard is not None:
        index, count = shard
        if not 0 <= index < count:
            raise ValueError(f"shard must be (i, n) with 0 <= i < n, got {shard}")
        indices = indices[index::count]
    matrix = ConfusionMatrix(num_classes, ignore_label)
    logger.info("evaluating %d images on %s (flip=%s, scales=%s)", len(indices), ctx, flip,
                tuple(scales))
    bar = tqdm(total=len(indices), desc="evaluate", unit="img", disable=not progress)
    for start in range(0, len(indices), len(ctx)):
        items = [dataset[i] for i in indices[start:start + len(ctx)]]
        for image, label, name in items:
            if label is None:
                raise ValueError(f"{name}: the dataset has no ground-truth label for this image")
            if np.asarray(label).shape != np.asarray(image).shape[:2]:
                raise ValueError(f"{name}: label shape {np.asarray(label).shape} does not match "
                                 f"image shape {np.asarray(image).shape[:2]}")
        preds = predict_labels(net, [it[0] for it in items], ctx, flip, scales)
        for (_, label, name), pred in zip(items, preds):
            matrix.update(pred, label)
            if prediction_dir is not None:
                save_label_id_png(Path(prediction_dir) / f"{name}.png", pred, num_classes)
        bar.update(len(items))
    bar.close()
    logger.info("mIoU %.4f over %d classes", matrix.miou(), num_classes)
    return matrix

"""SI and SISC inference: per-pixel class probabilities of a target image (paper Sec. 3.2).

SI segments the whole image at once. SISC segments K random h x w patches, each alone, adds
their softmax probabilities into an H x W x C map with a per-pixel count, and divides by the
count. The released code also adds the SI prediction with count 1 (``include_si``), which is
what gives the image corners, rarely covered by random patches, a prediction.
"""
import logging
import zlib

import cv2
import mxnet as mx
import numpy as np

from ..data.transforms import normalize
from .selection import class_argmax

logger = logging.getLogger(__name__)

AGGREGATIONS = ("probability", "vote")


def patch_seed(seed, name):
    """Per-image seed from the run seed and the image name, so shards draw the same patches."""
    return [int(seed), zlib.crc32(name.encode("utf-8"))]


def sample_patch_corners(height, width, patch_size, K, seed):
    """K top-left corners (y, x), uniform over all positions where a patch fits.

    Parameters
    ----------
    height, width : int
        Image size.
    patch_size : int or (int, int)
        h x w; clipped to the image when larger.
    K : int
        Number of patches.
    seed : int or sequence of int
        Seed of the numpy Generator; the same seed gives the same corners.

    Returns
    -------
    corners : ndarray
        (K, 2) int64 (y, x).
    size : (int, int)
        The (possibly clipped) patch size (h, w).
    """
    ph, pw = (patch_size, patch_size) if np.isscalar(patch_size) else patch_size
    ph, pw = min(int(ph), height), min(int(pw), width)
    rng = np.random.default_rng(seed)
    ys = rng.integers(0, height - ph + 1, size=K)
    xs = rng.integers(0, width - pw + 1, size=K)
    return np.stack([ys, xs], axis=1), (ph, pw)


def predict_batch(net, batch, ctx, flip=True):
    """Full-resolution probabilities of a batch, split across contexts, optionally flip-averaged.

    Parameters
    ----------
    net : HybridBlock
        Has ``predict(x, flip=...) -> (N, C, H, W)`` probabilities (``MLSLNet``: the released
        protocol, trunk and segmentation head only); parameters on every context in ctx.
    batch : ndarray
        (N, 3, H, W) float32 normalised images.
    ctx : Context or list of Context
        Devices; the batch is split into consecutive parts, one per context.
    flip : bool
        Average with the prediction of the horizontally flipped input (``MLSLNet``: at
        stride 8, as the released code).

    Returns
    -------
    ndarray
        (N, C, H, W) float32.
    """
    contexts = ctx if isinstance(ctx, (list, tuple)) else [ctx]
    parts = [p for p in np.array_split(batch, min(len(contexts), len(batch))) if len(p)]
    # Launch every context before reading any result: MXNet runs them concurrently.
    outputs = []
    for part, c in zip(parts, contexts):
        x = mx.nd.array(part, ctx=c)
        outputs.append(net.predict(x, flip=flip))
    if len(outputs) == 1:  # spares a copy of a full-image (C, H, W) volume
        return outputs[0].asnumpy()
    return np.concatenate([o.asnumpy() for o in outputs], axis=0)


def resize_probabilities(prob_map, height, width):
    """Resize a (C, h, w) probability map bilinearly to (C, height, width)."""
    if prob_map.shape[1:] == (height, width):
        return prob_map
    hwc = cv2.resize(np.ascontiguousarray(prob_map.transpose(1, 2, 0)), (width, height),
                     interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(hwc.reshape(height, width, -1).transpose(2, 0, 1))


def _inference_image(image, longer_side):
    if longer_side is None or max(image.shape[:2]) == longer_side:
        return normalize(image)
    scale = longer_side / max(image.shape[:2])
    size = (int(round(image.shape[1] * scale)), int(round(image.shape[0] * scale)))
    return normalize(cv2.resize(image, size, interpolation=cv2.INTER_LINEAR))


def single_inference(net, image, ctx, flip=True, longer_side=None):
    """SI: whole-image class probabilities at the image's full resolution.

    Parameters
    ----------
    image : ndarray
        uint8 (H, W, 3) RGB.
    longer_side : int, optional
        Run the network with the image resized so its longer side has this length (2048 is
        native Cityscapes); probabilities are resized back to (H, W).

    Returns
    -------
    ndarray
        (C, H, W) float32.
    """
    x = _inference_image(image, longer_side)
    prob = predict_batch(net, x[None], ctx, flip)[0]
    return resize_probabilities(prob, *image.shape[:2])


def single_inference_many(net, images, ctx, flip=True, longer_side=None):
    """SI of several images at once, split over the contexts: image i of a call runs on its own
    device, all devices at the same time (pass as many images as contexts).

    Each image goes through exactly the computation :func:`single_inference` gives it, so the
    probabilities do not depend on how many devices share the work.

    Parameters
    ----------
    images : list of ndarray
        uint8 (H, W, 3) RGB images; images of one size share a network call.
    net, ctx, flip, longer_side
        As in :func:`single_inference`.

    Returns
    -------
    list of ndarray
        (C, H, W) float32 for each image, in order.
    """
    contexts = ctx if isinstance(ctx, (list, tuple)) else [ctx]
    inputs = [_inference_image(image, longer_side) for image in images]
    by_shape = {}
    for i, x in enumerate(inputs):
        by_shape.setdefault(x.shape, []).append(i)
    probs = [None] * len(images)
    for members in by_shape.values():
        # predict_batch gives each context consecutive images: one per device at most.
        for start in range(0, len(members), len(contexts)):
            chunk = members[start:start + len(contexts)]
            batch = predict_batch(net, np.stack([inputs[i] for i in chunk]), contexts, flip)
            for i, prob in zip(chunk, batch):
                probs[i] = resize_probabilities(prob, *images[i].shape[:2])
    return probs


def accumulate_patches(prob_sum, count, patch_probs, corners, aggregation="probability"):
    """Add patch predictions into the composite map P_Ic and the per-pixel count (Sec. 3.2).

    Parameters
    ----------
    prob_sum : ndarray
        (C, H, W) float32 running sum, updated in place.
    count : ndarray
        (H, W) float32 running count, updated in place.
    patch_probs : ndarray
        (N, C, h, w) probabilities of N patches.
    corners : ndarray
        (N, 2) top-left (y, x) of each patch.
    aggregation : {'probability', 'vote'}
        ``'probability'`` adds softmax probabilities (the paper's SISC); ``'vote'`` adds a
        one-hot vote for each patch's argmax (the paper's "relative frequency" ablation).
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    num_classes, ph, pw = patch_probs.shape[1:]
    for prob, (y, x) in zip(patch_probs, corners):
        if aggregation == "vote":
            prob = np.eye(num_classes, dtype=np.float32)[class_argmax(prob)[0]].transpose(2, 0, 1)
        prob_sum[:, y:y + ph, x:x + pw] += prob
        count[y:y + ph, x:x + pw] += 1.0


def normalise_by_count(prob_sum, count):
    """Divide the composite map by the per-pixel count; uncovered pixels (count 0) stay 0.

    Returns
    -------
    prob : ndarray
        (C, H, W) float32 (prob_sum is divided in place and returned).
    covered : ndarray
        (H, W) bool, count > 0.
    """
    covered = count > 0
    np.divide(prob_sum, np.where(covered, count, 1.0)[None], out=prob_sum)
    return prob_sum, covered


def sisc_inference(net, image, ctx, settings, seed):
    """SISC probabilities of one image (paper Sec. 3.2).

    Parameters
    ----------
    net, image, ctx
        As in :func:`single_inference`; patches are cut from the image at the inference scale.
    settings : PseudoLabelSettings
        The step-1 settings: ``K`` random patches of ``patch_size`` (h = w, at the inference
        scale), ``flip`` and ``longer_side`` as in :func:`single_inference`, ``include_si``
        (add the SI prediction with count 1, released code; covers pixels no patch reaches),
        ``aggregation`` (see :func:`accumulate_patches`) and ``batch_size`` (patches per
        network call, split across contexts).
    seed : int or sequence of int
        Seed of the patch corners (see :func:`patch_seed` for a per-image seed).

    Returns
    -------
    prob : ndarray
        (C, H, W) float32 normalised composite probabilities at the image's full resolution.
    covered : ndarray
        (H, W) bool; False where no patch (and no SI) gave a prediction: probabilities 0 there.
    """
    K, patch_size, flip = settings.K, settings.patch_size, settings.flip
    include_si, aggregation, batch_size = settings.include_si, settings.aggregation, settings.batch_size
    longer_side = settings.longer_side
    if K < 1 and not include_si:
        raise ValueError("SISC needs K >= 1 patches or include_si=True")
    x = _inference_image(image, longer_side)
    height, width = x.shape[1:]
    corners, (ph, pw) = sample_patch_corners(height, width, patch_size, K, seed)
    prob_sum = count = None
    if include_si:
        si = predict_batch(net, x[None], ctx, flip)
        if aggregation == "vote":
            prob_sum = np.zeros(si.shape[1:], dtype=np.float32)
            count = np.zeros((height, width), dtype=np.float32)
            accumulate_patches(prob_sum, count, si, np.zeros((1, 2), dtype=np.int64), aggregation)
        else:  # the whole-image prediction with count 1 starts the sum (saves a full-size add)
            prob_sum, count = si[0], np.ones((height, width), dtype=np.float32)
    for start in range(0, K, batch_size):
        chunk = corners[start:start + batch_size]
        patches = np.stack([x[:, y:y + ph, x0:x0 + pw] for y, x0 in chunk])
        probs = predict_batch(net, patches, ctx, flip)
        if prob_sum is None:
            prob_sum = np.zeros((probs.shape[1], height, width), dtype=np.float32)
            count = np.zeros((height, width), dtype=np.float32)
        accumulate_patches(prob_sum, count, probs, chunk, aggregation)
    prob, covered = normalise_by_count(prob_sum, count)
    if (height, width) != image.shape[:2]:
        prob = resize_probabilities(prob, *image.shape[:2])
        covered = cv2.resize(covered.astype(np.uint8), (image.shape[1], image.shape[0]),
                             interpolation=cv2.INTER_NEAREST).astype(bool)
    if not covered.all():
        logger.debug("SISC: %d pixels covered by no patch", int((~covered).sum()))
    return prob, covered


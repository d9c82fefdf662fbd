"""Segmenting images larger than the device memory allows: overlapping tiles, stitched cores.

The image is cut into a grid of non-overlapping *cores*; each core is segmented inside a fixed-size
*window* that extends it by ``margin`` pixels of real image context on every side where the image
goes on (shifted inwards at the borders, so every window has the same shape and the hybridized
network is bound once). Only the core's argmax is kept ("overlap-tile" stitching), so nothing
image-sized but the uint8 input and output is ever held: peak memory is that of one window.

Windows start at multiples of 8 away from the last row/column, so the network's stride-8 grid
of a window coincides with the whole image's. A network whose output at a pixel depends only on
a neighbourhood smaller than ``margin`` gives exactly the whole-image result; ResNet-38's
context is wider, so tiled and whole-image predictions of it differ slightly near core edges
(measured in docs/ARCHITECTURE.md). An image no larger than one window is segmented whole, by
the very code path of :func:`mlsl_gluon.evaluation.predict_labels`.
"""
import logging

import numpy as np
from tqdm import tqdm

from .evaluate import _as_ctx_list, _normalized_input, multi_scale_probabilities, predict_labels

logger = logging.getLogger(__name__)

DEFAULT_TILE = (1024, 2048)  # a whole Cityscapes image: evaluation sizes run untiled
DEFAULT_MARGIN = 128
_STRIDE = 8


def axis_windows(length, tile, margin):
    """Windows and cores along one axis.

    Parameters
    ----------
    length : int
        Image extent along the axis.
    tile : int
        Window extent (clipped to ``length``).
    margin : int
        Context kept on each side of a core (rounded up to a multiple of 8); ``tile - 2 * margin``
        must be positive.

    Returns
    -------
    list of tuple
        ``(window_start, core_start, core_stop)``: window ``[window_start, window_start + tile)``,
        the core ``[core_start, core_stop)`` lies inside it; the cores partition ``[0, length)``.
    """
    if length <= tile:
        return [(0, 0, length)]
    margin = -(-margin // _STRIDE) * _STRIDE
    core = (tile - 2 * margin) // _STRIDE * _STRIDE
    if core <= 0:
        raise ValueError(f"tile {tile} leaves no core inside a margin of {margin} on both sides; "
                         f"use a tile larger than {2 * margin + _STRIDE}")
    windows = []
    for core_start in range(0, length, core):
        core_stop = min(core_start + core, length)
        start = min(max(core_start - margin, 0), length - tile)
        windows.append((start, core_start, core_stop))
    return windows


def tiled_predict_labels(net, image, ctx, flip=True, scales=(1.0,), tile=DEFAULT_TILE,
                         margin=DEFAULT_MARGIN, progress=True, desc="tiles"):
    """Argmax train ids of one image of any size, window by window.

    Parameters
    ----------
    net : HybridBlock
        See :func:`mlsl_gluon.evaluation.multi_scale_probabilities`; parameters on every context.
    image : ndarray
        uint8 (H, W, 3) RGB.
    ctx : list of mx.Context
        Windows are spread over the devices, one window per device at a time.
    flip, scales
        As in :func:`mlsl_gluon.evaluation.multi_scale_probabilities`, applied to each window.
    tile : tuple of int
        Window (height, width) in pixels.
    margin : int
        Context pixels around each core (rounded up to a multiple of 8).
    progress : bool
        Show a progress bar over the windows.
    desc : str
        Label of the progress bar.

    Returns
    -------
    ndarray
        uint8 (H, W) predicted class index.
    """
    ctx = _as_ctx_list(ctx)
    height, width = image.shape[:2]
    tile_h, tile_w = min(tile[0], height), min(tile[1], width)
    if (tile_h, tile_w) == (height, width):
        return predict_labels(net, [image], ctx[:1], flip, scales)[0]
    rows, cols = axis_windows(height, tile_h, margin), axis_windows(width, tile_w, margin)
    jobs = [(r, c) for r in rows for c in cols]
    logger.info("%dx%d image in %d windows of %dx%d (margin %d)", width, height, len(jobs), tile_w,
                tile_h, margin)
    labels = np.empty((height, width), dtype=np.uint8)
    with tqdm(total=len(jobs), desc=desc, unit="tile", disable=not progress) as bar:
        for start in range(0, len(jobs), len(ctx)):
            batch = jobs[start:start + len(ctx)]
            # Issue every device's window before waiting on any: MXNet runs them concurrently.
            pending = []
            for ((y0, _, _), (x0, _, _)), device in zip(batch, ctx):
                window = image[y0:y0 + tile_h, x0:x0 + tile_w]
                pending.append(multi_scale_probabilities(
                    net, _normalized_input(window, device), flip, scales).argmax(axis=1))
            for ((y0, cy0, cy1), (x0, cx0, cx1)), pred in zip(batch, pending):
                window_pred = pred[0].asnumpy().astype(np.uint8)
                labels[cy0:cy1, cx0:cx1] = window_pred[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
            bar.update(len(batch))
    return labels

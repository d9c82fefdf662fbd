"""Full-resolution class probabilities from the stride-8 network (SPEC sections 1 and 9).

The released evaluation (engrjavediqbal/MLSL ``issegm/evaluate.py`` L494-537 and L341-352)
zero-pads the normalised image at the bottom/right to a multiple of 8, takes the softmax at
stride 8, averages it with the mirrored prediction of the mirrored padded input (still at
stride 8), resizes every class plane x8 with PIL's bicubic filter and crops the padding away.

Geometry: with this padding and a half-pixel-centred x8 resize, stride-8 cell j covers pixels
8j .. 8j+7 (centre 8j + 3.5), the cell whose label the training crops read at pixel 8j + 4
(``mlsl_gluon.data.transforms.LABEL_OFFSET``). Both upsampling options below keep that geometry.

The bicubic resize is PIL's (``Image.resize(..., Image.BICUBIC)`` on mode 'F' planes: Keys cubic
with a = -0.5, support 2 pixels, weights renormalised where the support leaves the image),
computed as two sparse interpolation matrices applied with MXNet matrix products, so it runs on
the probabilities' device.
"""
import functools

import mxnet as mx
import numpy as np

#: Full-resolution protocols: ``'bicubic'`` is the released code's, ``'bilinear'`` an aligned
#: alternative (bilinear, half-pixel centres) on the same stride-8 probabilities.
UPSAMPLING_MODES = ("bicubic", "bilinear")
PIL_BICUBIC_A = -0.5
PIL_BICUBIC_SUPPORT = 2.0


def _pil_bicubic(t):
    """PIL's bicubic kernel (Keys, a = -0.5) at offsets ``t`` (array)."""
    a, t = PIL_BICUBIC_A, np.abs(t)
    near = ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0
    far = (((t - 5.0) * t + 8.0) * t - 4.0) * a
    return np.where(t < 1.0, near, np.where(t < 2.0, far, 0.0))


@functools.lru_cache(maxsize=64)
def bicubic_resize_matrix(in_size, out_size):
    """(out_size, in_size) float64 matrix M with ``resized = M @ signal`` as PIL resamples it.

    For every output pixel PIL centres the kernel at ``(i + 0.5) * in_size / out_size`` in input
    coordinates, evaluates it at the input pixel centres inside the (clipped) support, and
    divides by the weights' sum, so near the borders the weights renormalise instead of
    replicating the edge. For a reduction the kernel widens by ``in_size / out_size``.

    Parameters
    ----------
    in_size, out_size : int
        Lengths of the input and output axes.

    Returns
    -------
    ndarray
        (out_size, in_size) float64; every row sums to 1.
    """
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be positive, got {in_size} -> {out_size}")
    scale = in_size / out_size
    widen = max(scale, 1.0)
    support = PIL_BICUBIC_SUPPORT * widen
    matrix = np.zeros((out_size, in_size))
    for i in range(out_size):
        centre = (i + 0.5) * scale
        first = max(int(centre - support + 0.5), 0)
        stop = min(int(centre + support + 0.5), in_size)
        taps = np.arange(first, stop)
        weights = _pil_bicubic((taps - centre + 0.5) / widen)
        matrix[i, first:stop] = weights / weights.sum()
    return matrix


def pad_to_multiple(x, multiple):
    """Zero-pad (N, C, H, W) at the bottom and right so that H and W are multiples of ``multiple``.

    On normalised images zero is the mean colour, which is what the released code pads with.
    """
    height, width = x.shape[2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    return mx.nd.pad(x, mode="constant", constant_value=0.0,
                     pad_width=(0, 0, 0, 0, 0, pad_h, 0, pad_w))


def bicubic_upsample(prob, factor, height, width):
    """PIL-bicubic x ``factor`` resize of every (h, w) plane of ``prob``, cropped to (height, width).

    Parameters
    ----------
    prob : NDArray
        (N, C, h, w) float32.
    factor : int
        Integer magnification (8: the network's stride).
    height, width : int
        Output size, at most (h * factor, w * factor): the top-left crop of the resized planes.

    Returns
    -------
    NDArray
        (N, C, height, width) on ``prob.context``.
    """
    n, c, h, w = prob.shape
    if height > h * factor or width > w * factor:
        raise ValueError(f"crop {height}x{width} exceeds the resized {h * factor}x{w * factor}")
    ctx = prob.context
    # Only the rows/columns of the crop are computed: the crop is a slice of the matrices.
    # Each output pixel has 4 taps, so the matrices are sparse: MXNet's csr x dense product
    # is ~2x faster than two dense products on CPU (docs/ARCHITECTURE.md, "Profiles").
    rows = mx.nd.array(bicubic_resize_matrix(h, h * factor)[:height], ctx=ctx).tostype("csr")
    cols = mx.nd.array(bicubic_resize_matrix(w, w * factor)[:width], ctx=ctx).tostype("csr")
    # Along W first (as PIL): (width, w) x (w, N*C*h) ...
    wide = mx.nd.sparse.dot(cols, prob.reshape((-1, w)).T)
    # ... then along H: (height, h) x (h, N*C*width).
    wide = wide.reshape((width, n * c, h)).transpose((2, 1, 0)).reshape((h, -1))
    tall = mx.nd.sparse.dot(rows, wide)
    return tall.reshape((height, n, c, width)).transpose((1, 2, 0, 3))


def bilinear_upsample(prob, factor, height, width):
    """Bilinear x ``factor`` resize with half-pixel centres (cell j centred on 8j + 3.5), cropped."""
    h, w = prob.shape[2:]
    full = mx.nd.contrib.BilinearResize2D(prob, height=h * factor, width=w * factor,
                                          align_corners=False)
    return full[:, :, :height, :width]


def upsample_probabilities(prob, factor, height, width, mode="bicubic"):
    """Stride-``factor`` probabilities -> (N, C, height, width) by ``mode`` (see UPSAMPLING_MODES)."""
    if mode == "bicubic":
        return bicubic_upsample(prob, factor, height, width)
    if mode == "bilinear":
        return bilinear_upsample(prob, factor, height, width)
    raise ValueError(f"upsampling must be one of {UPSAMPLING_MODES}, got {mode!r}")

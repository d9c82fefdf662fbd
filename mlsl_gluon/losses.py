"""The MLSL training losses (paper Sec. 3.1, 3.3.2, 3.4), one pure function per equation.

Every function takes ``F`` (``mx.nd`` or ``mx.sym``) first, as Gluon's ``hybrid_forward`` does,
and returns one loss value PER IMAGE, shape (N,), whose sum over the images of a (device) batch
is that batch's loss. Two normalisations of the segmentation losses (``normalization``):

- ``'valid_pixels_per_device_batch'`` (released code, default): the mean over the valid
  pixels of the whole (per-device) batch, as ``mx.sym.SoftmaxOutput(multi_output=True,
  use_ignore=True, ignore_label=255, normalization='valid')`` in engrjavediqbal/MLSL
  ``util1/symbol/symbol.py`` L169-176 (and OHEM selecting over the whole batch, ``util/symbol/
  layer.py`` L37-76). Image i's value is its share: the sum over its valid pixels divided by
  the batch's valid-pixel count; an image's weight grows with its number of labelled pixels.
- ``'per_image'`` (the paper's text): the mean over each image's own valid pixels; the batch
  loss is then the mean of these values over the images.

Segmentation losses work at the logits' stride 8: ``label8`` has the spatial size of
``seg_logits`` (the labels were subsampled, the logits are not upsampled), and the label 255
marks pixels without a (pseudo-)label (``d = 0`` in Eq. 2).
"""

IGNORE_LABEL = 255
#: Normalisations of the segmentation losses, the released code's first (see the module notes).
SEG_NORMALIZATIONS = ("valid_pixels_per_device_batch", "per_image")


def _pixel_nll(F, seg_logits, label8):
    """-log p(label) per pixel, (N,H,W); pixels labelled out of range give finite garbage."""
    log_prob = F.log_softmax(seg_logits, axis=1)
    # 'clip' maps 255 to a valid class index; those pixels are masked out by the caller.
    return -F.pick(log_prob, label8, axis=1, mode="clip")


def _check_normalization(normalization):
    if normalization not in SEG_NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {SEG_NORMALIZATIONS}, got {normalization!r}")


def _masked_mean(F, values, mask, normalization):
    """Per-image sums of ``values`` where ``mask`` is 1, over the image's or the batch's count.

    An empty mask gives 0 (not 0/0 = NaN) and no gradient.
    """
    total = F.sum(values * mask, axis=(1, 2))
    if normalization == "per_image":
        return total / F.maximum(F.sum(mask, axis=(1, 2)), 1.0)
    return F.broadcast_div(total, F.maximum(F.sum(mask), 1.0))


def segmentation_cross_entropy(F, seg_logits, label8, ignore_label=IGNORE_LABEL,
                               normalization="valid_pixels_per_device_batch"):
    """Pixel-wise cross-entropy of Eq. 1 (source) / Eq. 2 (target, pseudo-labels), per image.

    ``L_seg = -sum_{H,W,C} d * Y * log P`` where ``d = 0`` at pixels labelled ``ignore_label``
    (no pseudo-label) and 1 elsewhere, normalised by ``sum d``: over the whole batch
    (``'valid_pixels_per_device_batch'``, released) or per image (``'per_image'``, so images
    of any label density weigh the same). Pixels without a label give 0 (no NaN) and no gradient.

    Parameters
    ----------
    F : module
        ``mx.nd`` or ``mx.sym``.
    seg_logits : NDArray or Symbol
        (N, C, h, w) segmentation logits at stride 8.
    label8 : NDArray or Symbol
        (N, h, w) class ids as floats at the same stride, ``ignore_label`` = no label.
    ignore_label : int
        Label value with ``d = 0``.
    normalization : {'valid_pixels_per_device_batch', 'per_image'}
        See the module notes.

    Returns
    -------
    NDArray or Symbol
        (N,): each image's share of the batch mean over valid pixels (summing to it), or
        with ``'per_image'`` the mean over each image's valid pixels.
    """
    _check_normalization(normalization)
    valid = label8 != ignore_label
    return _masked_mean(F, _pixel_nll(F, seg_logits, label8), valid, normalization)


def classification_bce(F, cls_logits, weak_labels):
    """Mean binary cross-entropy of the image-classification branch, Eq. 5, per image.

    ``L_Fcl(I, c) = -1/C sum_i [c_i log s_i + (1 - c_i) log(1 - s_i)]`` with ``s = sigmoid(x)``,
    computed from the logits ``x`` as ``max(x, 0) - x c + log(1 + exp(-|x|))``, which equals
    the formula above but never takes the log of 0.

    Parameters
    ----------
    F : module
        ``mx.nd`` or ``mx.sym``.
    cls_logits : NDArray or Symbol
        (N, C) classification logits (before the sigmoid).
    weak_labels : NDArray or Symbol
        (N, C) image-level labels ``c`` in {0, 1} (ground-truth presence for source images,
        pseudo weak labels ``c_pwl`` for target images).

    Returns
    -------
    NDArray or Symbol
        (N,) binary cross-entropy averaged over the C classes.

    Notes
    -----
    The released code's ``LogisticRegressionOutput(grad_scale=0.04)`` (engrjavediqbal/MLSL
    ``util1/symbol/symbol.py`` L184-186) back-propagates exactly the gradient of 0.04 x this
    value per image, summed over the images of a device batch: MXNet divides ``grad_scale`` by
    the number of outputs per image, C.
    """
    x = cls_logits
    per_class = F.relu(x) - x * weak_labels + F.Activation(-F.abs(x), act_type="softrelu")
    return F.mean(per_class, axis=1)


def mlsl_loss(seg_loss, cls_loss, lambda_cls=0.025):
    """Composite loss of Eq. 6: ``L_cmp = L_seg + lambda_cls * L_Fcl``.

    Eq. 7 (``L_STWL``) is the sum of Eq. 6 over the source and the target images of a batch;
    with per-image losses that is simply this function applied to the batch's per-image
    ``seg_loss`` and ``cls_loss`` and summed.

    Parameters
    ----------
    seg_loss : NDArray, Symbol or float
        ``L_seg`` (Eq. 1 / Eq. 2), e.g. from :func:`segmentation_cross_entropy`.
    cls_loss : NDArray, Symbol or float
        ``L_Fcl`` (Eq. 5), e.g. from :func:`classification_bce`.
    lambda_cls : float
        ``lambda_Fcl``; the paper uses 0.025 (Table 4 also tries 0.1, 0.05, 0.001), the
        released code 0.04 (see :func:`classification_bce`).

    Returns
    -------
    same type as the inputs
        ``seg_loss + lambda_cls * cls_loss``.
    """
    return seg_loss + lambda_cls * cls_loss


def ohem_cross_entropy(F, seg_logits, label8, thresh=0.6, min_kept=256, ignore_label=IGNORE_LABEL,
                       normalization="valid_pixels_per_device_batch"):
    """Bootstrapped (OHEM) pixel cross-entropy, an option reproducing the RELEASED CODE.

    Not in the paper: the released SISC command (``issegm/solve_ST1.py`` L448,
    ``fcrna_model_a1(..., bootstrapping=True)``) replaces Eq. 2 by online hard example mining;
    the SISC+PWL command (``issegm1/solve_ST.py`` L552, ``bootstrapping=False``) and source
    training (``issegm/train_src.py`` L436) do not. Among the valid pixels of the selection
    pool, keep those whose probability of the labelled class is ``<= thresh``; if fewer than
    ``min_kept`` qualify, raise the threshold to the ``min_kept``-th smallest such probability
    (so at least ``min_kept`` pixels, or all valid pixels when there are fewer). The loss is the
    mean cross-entropy over the kept pixels. Pixel selection carries no gradient. The pool is
    the whole (per-device) batch with ``'valid_pixels_per_device_batch'`` (released,
    ``util/symbol/layer.py`` L37-76 flattens the batch) and each image with ``'per_image'``.

    Parameters
    ----------
    F : module
        ``mx.nd`` or ``mx.sym``. With ``mx.sym``, ``min_kept`` must not exceed h * w.
    seg_logits : NDArray or Symbol
        (N, C, h, w) logits at stride 8.
    label8 : NDArray or Symbol
        (N, h, w) class ids as floats, ``ignore_label`` = no label.
    thresh : float
        Probability below which a pixel counts as hard (released code: 0.6).
    min_kept : int
        Minimum number of pixels kept per pool (released code: 256).
    ignore_label : int
        Label value of unlabelled pixels.
    normalization : {'valid_pixels_per_device_batch', 'per_image'}
        Selection pool and normaliser: the whole batch (released) or each image.

    Returns
    -------
    NDArray or Symbol
        (N,): each image's share of the batch mean over the kept pixels, or with
        ``'per_image'`` the mean over each image's kept pixels (0 without valid pixels).
    """
    if min_kept < 1:
        raise ValueError(f"min_kept must be >= 1, got {min_kept}")
    _check_normalization(normalization)
    valid = label8 != ignore_label
    nll = _pixel_nll(F, seg_logits, label8)
    prob = F.BlockGrad(F.exp(-nll))
    # Invalid pixels get probability 2 (> any real one) so they never rank among the hardest.
    pool_shape = (0, -1) if normalization == "per_image" else (1, -1)
    ranked = F.where(valid, prob, F.ones_like(prob) * 2.0).reshape(pool_shape)
    k = min_kept
    if hasattr(ranked, "shape"):
        k = min(k, ranked.shape[1])
    kth_smallest = F.topk(ranked, axis=1, k=k, ret_typ="value", is_ascend=True)
    kth_smallest = F.slice_axis(kth_smallest, axis=1, begin=k - 1, end=k).reshape((0, 1, 1))
    cut = F.maximum(kth_smallest, thresh)
    kept = valid * F.broadcast_lesser_equal(prob, cut)
    return _masked_mean(F, nll, F.BlockGrad(kept), normalization)

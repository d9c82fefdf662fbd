"""Step 2 of an MLSL round: SGD on Eq. 3 / Eq. 7 over a list of devices (paper Sec. 4.1.3).

``build_trainer`` makes the optimiser with the paper's parameter groups, ``round_learning_rate``
is the per-round schedule, ``train_epoch`` runs one pass over a batch iterator. Nothing here
knows about rounds, configs or files: the round runner owns those.
"""
import logging
import math
import time

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon
from tqdm import tqdm

from mlsl_gluon.config import LossSettings
from mlsl_gluon.losses import (
    IGNORE_LABEL,
    SEG_NORMALIZATIONS,
    classification_bce,
    mlsl_loss,
    ohem_cross_entropy,
    segmentation_cross_entropy,
)
from mlsl_gluon.training.distributed import num_workers, process_kvstore, start_distributed_trainer

logger = logging.getLogger(__name__)

#: Parameter name endings that get lr x2 and no weight decay (conv/dense biases, BN beta).
DOUBLE_LR_SUFFIXES = ("_bias", "_beta")


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; raised before the parameters are updated."""

    def __init__(self, iteration, loss_name, value):
        self.iteration = iteration
        self.loss_name = loss_name
        self.value = value
        super().__init__(
            f"non-finite {loss_name} loss ({value}) at global iteration {iteration}; "
            "the parameters were not updated with it (they are the last good ones)"
        )


def trainable_parameters(net):
    """The parameters SGD updates: everything with a gradient (BN running stats have none).

    Parameters
    ----------
    net : gluon.Block

    Returns
    -------
    list of gluon.Parameter
        In ``collect_params()`` order (the trainer's parameter indices follow it).
    """
    return [p for p in net.collect_params().values() if p.grad_req != "null"]


def is_double_lr_parameter(name):
    """True for biases and BN beta, which train at lr x2 without weight decay (SPEC sec. 5)."""
    return name.endswith(DOUBLE_LR_SUFFIXES)


def build_trainer(net, ctx_list, *, lr, momentum=0.9, wd=5e-4, kvstore="device"):
    """SGD trainer with the paper's parameter groups (Sec. 4.1.3, SPEC section 5).

    Biases and BN beta get ``lr_mult = 2`` and ``wd_mult = 0``; every other trainable
    parameter lr x1 and weight decay ``wd``. Parameters without gradient (BN running mean and
    variance) are not given to the trainer, so they stay frozen. Updates always run on the
    workers (``update_on_kvstore=False``): the kvstore only sums gradients, so the learning
    rate can change between rounds and optimiser states can be saved, also with ``dist_sync``.
    The gradient rescaling (``rescale_grad``) is set by :func:`train_epoch` at every step
    (``Trainer.step``): 1 / number of devices with the released loss normalisation, as the
    released ``optimizer_params`` (``'rescale_grad': 1.0 / len(args.gpus.split(','))``,
    engrjavediqbal/MLSL ``issegm1/solve_ST.py`` L733, ``issegm/solve_ST1.py`` L627), or
    1 / global batch size with the per-image one.
    With a ``dist_*`` kvstore every worker must call this (it waits for all of them); the
    first call of a process gives every worker rank 0's parameter values, later calls (a new
    trainer per round) reuse the process's kvstore and must train the same network.

    Parameters
    ----------
    net : gluon.Block
        Initialised on every context of ``ctx_list``.
    ctx_list : list of mx.Context
        Devices the parameters live on (checked against the network).
    lr : float
        Base learning rate.
    momentum, wd : float
        SGD momentum and weight decay (paper: 0.9, 5e-4).
    kvstore : str or mx.kvstore.KVStore
        MXNet kvstore type: ``'local'``, ``'device'``, ``'dist_sync'``, ``'dist_device_sync'``...,
        or an already created kvstore (with ``dist_*``, create it once per process, read the
        worker's ``rank`` from it, and pass it here).

    Returns
    -------
    gluon.Trainer
    """
    params = trainable_parameters(net)
    if not params:
        raise ValueError("the network has no trainable parameter")
    for param in params:
        have = set(param.list_ctx())
        if have != set(ctx_list):
            raise ValueError(f"parameter {param.name} lives on {sorted(map(str, have))}, "
                             f"not on the training devices {[str(c) for c in ctx_list]}")
    lr_mult, wd_mult = {}, {}
    for index, param in enumerate(params):
        double = is_double_lr_parameter(param.name)
        param.lr_mult = 2.0 if double else 1.0
        param.wd_mult = 0.0 if double else 1.0
        lr_mult[index], wd_mult[index] = param.lr_mult, param.wd_mult
    optimizer = mx.optimizer.SGD(learning_rate=lr, momentum=momentum, wd=wd)
    # Index-keyed multipliers survive pickling of the optimiser (its param_dict does not).
    optimizer.set_lr_mult(lr_mult)
    optimizer.set_wd_mult(wd_mult)
    store = process_kvstore(kvstore)
    trainer = gluon.Trainer(params, optimizer, kvstore=store, update_on_kvstore=False)
    if isinstance(store, mx.kvstore.KVStore) and "dist" in store.type:
        start_distributed_trainer(trainer, store)
    return trainer


def round_learning_rate(base_lr, round_idx):
    """Learning rate of MLSL round ``round_idx``: ``base_lr / sqrt(2) ** round_idx`` (Sec. 4.1.3).

    Parameters
    ----------
    base_lr : float
        Round-0 learning rate (paper: 1e-4).
    round_idx : int
        0-based round index; the rate is fixed within a round.

    Returns
    -------
    float
    """
    if round_idx < 0:
        raise ValueError(f"round_idx must be >= 0, got {round_idx}")
    return base_lr / math.sqrt(2.0) ** round_idx


def set_learning_rate(trainer, lr):
    """Set the base learning rate of ``trainer`` (multipliers of the groups are kept)."""
    trainer.set_learning_rate(lr)


def _as_ndarray(array):
    return array if isinstance(array, mx.nd.NDArray) else mx.nd.array(np.asarray(array))


def _split(array, ctx_list):
    return gluon.utils.split_and_load(_as_ndarray(array), ctx_list, batch_axis=0, even_split=False)


def _pad_batch(images, label8, weak, num_devices):
    """Repeat images so every device gets one; returns arrays and a (N',) mask of real images.

    A device without data would keep a stale gradient; padded copies get weight 0 instead,
    and no labelled pixel, so they also stay out of a per-batch valid-pixel count.
    """
    images, label8 = _as_ndarray(images), _as_ndarray(label8)
    weak = None if weak is None else _as_ndarray(weak)
    real = images.shape[0]
    mask = mx.nd.ones((max(real, num_devices),))
    if real >= num_devices:
        return images, label8, weak, mask
    take = mx.nd.array(np.arange(num_devices) % real)
    mask[real:] = 0
    pad = [None if a is None else mx.nd.take(a, take) for a in (images, label8, weak)]
    pad[1][real:] = IGNORE_LABEL
    return pad[0], pad[1], pad[2], mask


def _forward_losses(net, images, label8, weak, *, use_cls, ohem, normalization):
    """Per-image losses on one device: (seg (n,), cls (n,) or None, classifier unused?)."""
    out = net(images)
    seg_logits, cls_logits = (out[0], out[1]) if isinstance(out, (tuple, list)) else (out, None)
    if ohem:
        seg = ohem_cross_entropy(mx.nd, seg_logits, label8, normalization=normalization)
    else:
        seg = segmentation_cross_entropy(mx.nd, seg_logits, label8, normalization=normalization)
    if not use_cls:
        return seg, None, cls_logits is not None
    if cls_logits is None:
        raise ValueError("use_cls=True but the network returns no classification logits "
                         "(build it with with_classifier=True)")
    return seg, classification_bce(mx.nd, cls_logits, weak), False


def _check_finite(iteration, values):
    for name, value in values.items():
        if not math.isfinite(value):
            raise NonFiniteLossError(iteration, name, value)


def train_epoch(net, trainer, batches, ctx_list, *, loss=LossSettings(), start_iteration=0, log_every=20,
                progress=True, on_iteration=None, seed=None):
    """One pass of SGD over ``batches``: step 2 of a round (Eq. 3, or Eq. 7 with ``use_cls``).

    Each global batch is split over ``ctx_list`` (a batch smaller than the device count is
    padded with zero-weight copies); every device computes its loss (Eq. 1/2 segmentation
    cross-entropy at stride 8, plus ``lambda_cls`` x Eq. 5 per image with ``use_cls``) and
    back-propagates it. ``loss.normalization`` says how:

    - ``'valid_pixels_per_device_batch'`` (released code): device loss = cross-entropy
      averaged over the valid pixels of the device's batch (OHEM: selected over it) +
      ``lambda_cls`` x the per-image Eq. 5 values SUMMED over the device's images; the update
      uses the mean of the device gradients (``rescale_grad`` = 1 / number of devices holding
      images, times the number of ``dist_*`` workers). The update depends on the split.
    - ``'per_image'`` (paper text): each image's mean over its own valid pixels, plus
      ``lambda_cls`` x Eq. 5; the update uses the mean over the global batch (``rescale_grad``
      = 1 / (batch size x workers)), so it does not depend on how the batch is split.

    A classifier branch the network has but ``use_cls`` leaves unused is not updated at all.
    Deterministic on CPU for identical inputs and parameters; with
    dropout in the network pass ``seed`` so that the masks depend only on the iteration.

    Parameters
    ----------
    net : gluon.Block
        Returns ``seg_logits`` or ``(seg_logits, cls_logits)``.
    trainer : gluon.Trainer
        From :func:`build_trainer`.
    batches : iterable
        Yields ``(images (N,3,S,S), label8 (N,S/8,S/8), weak (N,C) or None)`` as numpy
        arrays or NDArrays; label 255 = no (pseudo-)label. ``len(batches)`` sizes the bar.
    ctx_list : list of mx.Context
    loss : LossSettings
        ``use_cls``: add the PWL classification loss (Eq. 5; ``weak`` must then be given) with
        weight ``lambda_cls`` (``lambda_Fcl`` of Eq. 6, paper 0.025); released-code options
        ``ohem`` (OHEM bootstrapped cross-entropy instead of Eq. 1/2) and ``cls_loss_scale``
        (if given, replaces ``lambda_cls``; the released code used 0.04); ``normalization``
        (see above).
    start_iteration : int
        Global index of the first batch (for logging, errors and resumed epochs).
    log_every : int
        Log a line every this many iterations (0 = never).
    progress : bool
        Show a tqdm bar with the loss and images/s.
    on_iteration : callable or None
        Called as ``on_iteration(iteration, losses)`` after each update, ``losses`` a dict of
        floats (``seg``, ``cls`` when used, ``total``); e.g. to checkpoint mid-epoch.
    seed : int or None
        If given, MXNet's RNG (dropout) is re-seeded with ``seed + iteration`` before every
        iteration, so an epoch resumed at ``start_iteration`` draws the same masks as an
        uninterrupted one.

    Returns
    -------
    dict
        ``seg`` and ``total``: the losses whose gradient the updates used (per image with
        ``'per_image'``, per device batch with the released normalisation), ``cls`` the mean
        Eq. 5 value per image, each averaged over the epoch's images; ``iterations``,
        ``images`` and ``images_per_s``.

    Raises
    ------
    NonFiniteLossError
        Before the update of the iteration where a loss is NaN or infinite.
    """
    weight, use_cls, ohem = loss.cls_weight, loss.use_cls, loss.ohem
    loss_normalization = loss.normalization
    if loss_normalization not in SEG_NORMALIZATIONS:
        raise ValueError(f"loss_normalization must be one of {SEG_NORMALIZATIONS}, "
                         f"got {loss_normalization!r}")
    total = {"seg": 0.0, "total": 0.0}
    if use_cls:
        total["cls"] = 0.0
    seen, iteration = 0, start_iteration
    started = time.perf_counter()
    bar = _progress_bar(batches, progress)
    for images, label8, weak in bar:
        if use_cls and weak is None:
            raise ValueError(f"use_cls=True but batch {iteration} has no weak labels")
        batch_size = int(images.shape[0])
        if seed is not None:
            mx.random.seed(seed + iteration)
        images, label8, weak, real = _pad_batch(images, label8, weak if use_cls else None, len(ctx_list))
        parts = zip(_split(images, ctx_list), _split(label8, ctx_list), _split(real, ctx_list),
                    _split(weak, ctx_list) if use_cls else [None] * len(ctx_list))
        seg_sums, cls_sums, objectives = [], [], []
        with autograd.record():
            for x, y, m, c in parts:
                seg, cls, cls_unused = _forward_losses(net, x, y, c, use_cls=use_cls, ohem=ohem,
                                                       normalization=loss_normalization)
                objective = mlsl_loss(seg, cls, weight) if use_cls else seg
                objectives.append((objective * m).sum())
                seg_sums.append((seg * m).sum())
                if use_cls:
                    cls_sums.append((cls * m).sum())
        autograd.backward(objectives)
        # The gradients of the devices are summed; divide by what the losses are averaged over.
        divisor = batch_size if loss_normalization == "per_image" else min(batch_size, len(ctx_list))
        losses = {"seg": _sum_to_float(seg_sums) / divisor}
        if use_cls:
            losses["cls"] = _sum_to_float(cls_sums) / batch_size
        losses["total"] = _sum_to_float(objectives) / divisor
        _check_finite(iteration, losses)
        # Without use_cls the classifier's parameters get no gradient: skip (not decay) them.
        trainer.step(divisor * num_workers(trainer), ignore_stale_grad=cls_unused)
        seen += batch_size
        for name, value in losses.items():
            total[name] += value * batch_size
        speed = seen / max(time.perf_counter() - started, 1e-9)
        if bar is not batches:
            bar.set_postfix(loss=f"{losses['total']:.4f}", img_s=f"{speed:.2f}")
        if log_every and (iteration - start_iteration + 1) % log_every == 0:
            logger.info("iteration %d: %s, %.2f images/s", iteration,
                        ", ".join(f"{k} {v:.4f}" for k, v in losses.items()), speed)
        if on_iteration is not None:
            on_iteration(iteration, losses)
        iteration += 1
    elapsed = time.perf_counter() - started
    result = {name: value / max(seen, 1) for name, value in total.items()}
    result.update(iterations=iteration - start_iteration, images=seen,
                  images_per_s=seen / elapsed if elapsed > 0 else 0.0)
    return result


def _sum_to_float(scalars):
    # One host transfer per loss list; also the synchronisation point before the update.
    return float(sum(s.asscalar() for s in scalars))


def _progress_bar(batches, progress):
    if not progress:
        return batches
    total = len(batches) if hasattr(batches, "__len__") else None
    return tqdm(batches, total=total, desc="train", unit="batch", leave=False)

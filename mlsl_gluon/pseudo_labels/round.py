"""Step 1 of an MLSL round: pseudo-labels (and PWL) for the whole target set, network fixed.

Pass 1 (per shard): infer every image of the shard (SI or SISC), multiply in the spatial prior,
store the top classes in the round's HDF5 cache and add them to a threshold accumulator; the
accumulator and a manifest are saved next to the labels. Pass 2 (:func:`combine_pseudo_label_round`,
once all shards are done): merge the accumulators into the class-balanced thresholds, then read
every cache entry, select the pseudo-labels and write

    out_dir/labels/<name>.png    uint8 train ids, 255 = not selected
    out_dir/weak_labels.json     {name: [0/1] * C}, when class mean sizes are given
    out_dir/stats.json           thresholds, selected pixels per class, vanished classes, settings
"""
import hashlib
import json
import logging
import os
import time

import cv2
import numpy as np
from tqdm import tqdm

from ..data.classes import class_names, palette
from ..io import atomic_write_bytes, atomic_write_json
from .cache import ProbabilityCache, encode_top_classes
from .inference import patch_seed, single_inference, sisc_inference
from .selection import (
    IGNORE_LABEL,
    ThresholdAccumulator,
    apply_spatial_prior,
    dequantise_probability,
    quantise_probability,
    select_from_top_classes,
)
from .weak_labels import pseudo_weak_labels

logger = logging.getLogger(__name__)

METHODS = ("sisc", "si")


def _shard_tag(round_idx, shard):
    return f"round{round_idx}_shard{shard[0]}of{shard[1]}"


def _names_of(dataset):
    names = getattr(dataset, "names", None)
    return list(names) if names is not None else [dataset[i][2] for i in range(len(dataset))]


def round_settings(*, round_idx, method, K, patch_size, seed, flip, include_si, aggregation,
                   longer_side, num_classes, prior, checkpoint_digest, top_classes, code_shift):
    """The cache metadata: everything the cached volumes depend on (not the portion)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    sisc = method == "sisc"
    prior_digest = "" if prior is None else hashlib.sha256(
        np.ascontiguousarray(prior, dtype=np.float32).tobytes()).hexdigest()
    return {
        "round": int(round_idx), "method": method, "checkpoint_digest": str(checkpoint_digest),
        "K": int(K) if sisc else 0, "patch_size": int(patch_size) if sisc else 0,
        "seed": int(seed) if sisc else 0, "include_si": bool(include_si) if sisc else True,
        "aggregation": aggregation if sisc else "probability", "flip": bool(flip),
        "resolution": "native" if longer_side is None else f"longer_side={int(longer_side)}",
        "num_classes": int(num_classes), "prior_digest": prior_digest, "top_classes": int(top_classes),
        "code_shift": int(code_shift),
        # Lossless only without a prior: then every k_c >= the grid point of 1/C.
        "second_class_floor": 0.0 if prior is not None else float(
            dequantise_probability(quantise_probability(1.0 / num_classes, code_shift), code_shift)),
    }


def run_pseudo_label_round(net, dataset, out_dir, *, round_idx, portion, ctx, method="sisc", K=50,
                           patch_size=512, seed=0, flip=True, include_si=True, aggregation="probability",
                           batch_size=4, longer_side=None, prior=None, class_mean_sizes=None, eta=0.05,
                           cache_path=None, checkpoint_digest="", shard=(0, 1), regenerate=False,
                           top_classes=2, code_shift=0, save_colour=False, progress=True):
    """Pseudo-labels of one round for a target dataset (or one shard of it).

    Parameters
    ----------
    net : HybridBlock
        Fixed network with ``predict`` (parameters on every context of ``ctx``).
    dataset : Dataset
        Items ``(image uint8 HxWx3, label or None, name)``.
    out_dir : str
        Round folder (labels/, weak_labels.json, stats.json, shards/).
    round_idx : int
        Round number (recorded in the cache).
    portion : float
        Target portion p of the class-balanced selection.
    ctx : Context or list of Context
        Devices; patch batches are split across them.
    method : {'sisc', 'si'}
        Patch-based SISC (paper) or single whole-image inference (CBST).
    K, patch_size, seed, flip, include_si, aggregation, batch_size, longer_side
        See :func:`mlsl_gluon.pseudo_labels.inference.sisc_inference`; ``seed`` is combined
        with each image name so every shard draws the same patches.
    prior : ndarray, optional
        (C, gh, gw) spatial prior (CBST-SP) multiplied into the probabilities.
    class_mean_sizes : ndarray, optional
        (C,) Eq. 4 sizes; when given, PWL vectors are written to weak_labels.json.
    eta : float
        PWL factor.
    cache_path : str, optional
        HDF5 cache; default ``out_dir/cache/round<r>.h5``. Shard i of n uses
        ``<stem>.shard<i>of<n>.h5``.
    checkpoint_digest : str
        Digest of the network weights; a cache made with other weights is refused.
    shard : (int, int)
        (i, n): this process labels images i, i + n, i + 2n, ... With n > 1 only pass 1 runs;
        call :func:`combine_pseudo_label_round` once every shard has finished.
    regenerate : bool
        Recreate a cache whose settings differ instead of refusing it.
    top_classes : int
        Classes per pixel kept in the cache (see :mod:`.cache`).
    code_shift : int
        Coarsening of the probability grid of cache and thresholds (see :mod:`.selection`).
    save_colour : bool
        Also write colour visualisations to ``out_dir/colour/<name>.png``.
    progress : bool
        Show tqdm progress bars.

    Returns
    -------
    dict
        The round statistics (see stats.json), or for n > 1 this shard's summary.
    """
    shard_i, shard_n = int(shard[0]), int(shard[1])
    if not 0 <= shard_i < shard_n:
        raise ValueError(f"shard must be (i, n) with 0 <= i < n, got {shard}")
    num_classes = getattr(net, "num_classes", None) or dataset.num_classes
    settings = round_settings(
        round_idx=round_idx, method=method, K=K, patch_size=patch_size, seed=seed, flip=flip,
        include_si=include_si, aggregation=aggregation, longer_side=longer_side,
        num_classes=num_classes, prior=prior, checkpoint_digest=checkpoint_digest,
        top_classes=top_classes, code_shift=code_shift)
    settings["shard"] = f"{shard_i}/{shard_n}"
    if cache_path is None:
        cache_path = os.path.join(out_dir, "cache", f"round{round_idx}.h5")
    if shard_n > 1:
        stem, ext = os.path.splitext(cache_path)
        cache_path = f"{stem}.shard{shard_i}of{shard_n}{ext or '.h5'}"
    os.makedirs(os.path.dirname(os.path.abspath(cache_path)), exist_ok=True)

    names = _names_of(dataset)
    indices = list(range(shard_i, len(dataset), shard_n))
    accumulator = ThresholdAccumulator(num_classes, code_shift)
    skipped = 0
    start = time.time()
    with ProbabilityCache(cache_path, settings, regenerate=regenerate) as cache:
        for idx in tqdm(indices, desc=f"pseudo-labels round {round_idx} ({method})", unit="img",
                        disable=not progress):
            name = names[idx]
            if cache.has(name):
                top_class, top_code, _ = cache.read(name)
                skipped += 1
            else:
                image = dataset[idx][0]
                if method == "sisc":
                    prob, covered = sisc_inference(
                        net, image, ctx, K=K, patch_size=patch_size, seed=patch_seed(seed, name),
                        flip=flip, include_si=include_si, aggregation=aggregation,
                        batch_size=batch_size, longer_side=longer_side)
                else:
                    prob = single_inference(net, image, ctx, flip=flip, longer_side=longer_side)
                    covered = np.ones(prob.shape[1:], dtype=bool)
                if prior is not None:
                    prob = apply_spatial_prior(prob, prior)
                top_class, top_code = encode_top_classes(prob, top_classes, valid=covered, shift=code_shift,
                                                         floor=settings["second_class_floor"])
                cache.write(name, top_class, top_code, uncovered=int((~covered).sum()))
            # Thresholds always come from the cached (quantised) values, so a resumed pass
            # gives exactly the thresholds of an uninterrupted one.
            accumulator.update_codes(top_class[0], top_code[0], valid=top_class[0] != IGNORE_LABEL)
    if skipped:
        logger.info("%s: %d of %d images were already cached", cache_path, skipped, len(indices))

    shard_dir = os.path.join(out_dir, "shards")
    tag = _shard_tag(round_idx, (shard_i, shard_n))
    accumulator.save(os.path.join(shard_dir, tag + ".npz"))
    manifest = {"cache_path": os.path.abspath(cache_path), "settings": settings,
                "names": [names[i] for i in indices], "skipped": skipped,
                "seconds": round(time.time() - start, 3)}
    atomic_write_json(os.path.join(shard_dir, tag + ".json"), manifest)
    if shard_n > 1:
        return {"shard": settings["shard"], "images": len(indices), "skipped": skipped,
                "cache_path": manifest["cache_path"]}
    return combine_pseudo_label_round(out_dir, round_idx=round_idx, portion=portion, num_shards=1,
                                      class_mean_sizes=class_mean_sizes, eta=eta,
                                      save_colour=save_colour, progress=progress)


def _load_manifests(out_dir, round_idx, num_shards):
    shard_dir = os.path.join(out_dir, "shards")
    manifests, missing = [], []
    for i in range(num_shards):
        path = os.path.join(shard_dir, _shard_tag(round_idx, (i, num_shards)) + ".json")
        if not os.path.isfile(path):
            missing.append(path)
            continue
        with open(path) as f:
            manifests.append(json.load(f))
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {num_shards} shards of round {round_idx} have not "
                                f"finished pass 1; missing: {', '.join(missing)}")
    common = [{k: v for k, v in m["settings"].items() if k != "shard"} for m in manifests]
    for i, other in enumerate(common[1:], start=1):
        if other != common[0]:
            diff = sorted(k for k in set(other) | set(common[0]) if other.get(k) != common[0].get(k))
            raise ValueError(f"shard {i} of round {round_idx} in {shard_dir} used different settings "
                             f"from shard 0: {diff}")
    return manifests


def _write_png(path, label):
    ok, buf = cv2.imencode(".png", label)
    if not ok:
        raise RuntimeError(f"could not encode {path}")
    atomic_write_bytes(path, buf.tobytes())


def combine_pseudo_label_round(out_dir, *, round_idx, portion, num_shards, class_mean_sizes=None,
                               eta=0.05, save_colour=False, progress=True):
    """Pass 2: merge the shards' accumulators, select pseudo-labels from every cache, write them.

    Parameters
    ----------
    out_dir : str
        The round folder every shard wrote to.
    round_idx, portion, class_mean_sizes, eta, save_colour, progress
        As in :func:`run_pseudo_label_round`.
    num_shards : int
        n of the shards that ran pass 1.

    Returns
    -------
    dict
        The statistics also written to ``out_dir/stats.json``.
    """
    start = time.time()
    manifests = _load_manifests(out_dir, round_idx, num_shards)
    accumulator = None
    for i in range(num_shards):
        acc = ThresholdAccumulator.load(
            os.path.join(out_dir, "shards", _shard_tag(round_idx, (i, num_shards)) + ".npz"))
        accumulator = acc if accumulator is None else accumulator.merge(acc)
    thresholds = accumulator.thresholds(portion)
    num_classes = accumulator.num_classes
    selected = np.zeros(num_classes, dtype=np.int64)
    weak, uncovered, total_pixels = {}, 0, 0
    colours = palette(num_classes) if save_colour else None
    total = sum(len(m["names"]) for m in manifests)
    with tqdm(total=total, desc=f"selecting round {round_idx}", unit="img", disable=not progress) as bar:
        for manifest in manifests:
            with ProbabilityCache(manifest["cache_path"], manifest["settings"], mode="r") as cache:
                for name in manifest["names"]:
                    top_class, top_code, n_uncovered = cache.read(name)
                    top_prob = dequantise_probability(top_code, accumulator.shift)
                    label = select_from_top_classes(top_class, top_prob, thresholds)
                    _write_png(os.path.join(out_dir, "labels", name + ".png"), label)
                    if colours is not None:
                        rgb = np.zeros(label.shape + (3,), dtype=np.uint8)
                        rgb[label != IGNORE_LABEL] = colours[label[label != IGNORE_LABEL]]
                        _write_png(os.path.join(out_dir, "colour", name + ".png"), rgb[..., ::-1])
                    selected += np.bincount(label.ravel(), minlength=256)[:num_classes]
                    uncovered += n_uncovered
                    total_pixels += label.size
                    if class_mean_sizes is not None:
                        weak[name] = pseudo_weak_labels(label, class_mean_sizes, eta).tolist()
                    bar.update(1)
    if class_mean_sizes is not None:
        atomic_write_json(os.path.join(out_dir, "weak_labels.json"), weak)

    names = list(class_names(num_classes)) if num_classes in (16, 19) else \
        [str(c) for c in range(num_classes)]
    vanished = [names[c] for c in range(num_classes) if selected[c] == 0]
    if vanished:
        logger.warning("round %d: no pixel pseudo-labelled as %s; self-training can collapse onto "
                       "the remaining classes", round_idx, ", ".join(vanished))
    if uncovered:
        logger.info("round %d: %d pixels covered by no SISC patch were left unlabelled",
                    round_idx, uncovered)
    stats = {
        "round": int(round_idx), "portion": float(portion), "num_images": total,
        "num_shards": int(num_shards), "class_names": names,
        "thresholds": [float(k) for k in thresholds],
        "argmax_pixels_per_class": accumulator.class_counts().tolist(),
        "selected_pixels_per_class": selected.tolist(),
        "selected_fraction": float(selected.sum()) / max(total_pixels, 1),
        "vanished_classes": vanished, "uncovered_pixels": int(uncovered),
        "settings": {k: v for k, v in manifests[0]["settings"].items() if k != "shard"},
        "eta": float(eta) if class_mean_sizes is not None else None,
        "pass1_seconds": [m["seconds"] for m in manifests],
        "pass2_seconds": round(time.time() - start, 3),
    }
    atomic_write_json(os.path.join(out_dir, "stats.json"), stats)
    return stats

"""Step 1 of an MLSL round: pseudo-labels (and PWL) for the whole target set, network fixed.

Pass 1 (per shard): infer every image of the shard (SI or SISC), multiply in the spatial prior,
store the top classes in the round's HDF5 cache and add them to a threshold accumulator; the
accumulator and a manifest are saved next to the labels. Pass 2 (:func:`combine_pseudo_label_round`,
once all shards are done): merge the accumulators into coarse class-balanced thresholds, refine
them on the caches' finer first-class grid by one sweep over every shard's cached first-class
codes (:class:`.thresholds.CodeRefinement`, memory flat), then read every cache entry, select
the pseudo-labels and write

    out_dir/labels/<name>.png    uint8 train ids, 255 = not selected
    out_dir/weak_labels.json     {name: [0/1] * C}, when class mean sizes are given
    out_dir/stats.json           thresholds, selected pixels per class, vanished classes, settings
"""
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from itertools import islice

import cv2
import numpy as np
from tqdm import tqdm

from ..data.classes import class_names, palette
from ..io import atomic_write_bytes, atomic_write_json
from .cache import (
    LATER_CLASS_SPREAD,
    PLAIN_FIRST_SHIFT,
    PLAIN_RATIO_STEPS,
    PRIOR_FIRST_SHIFT,
    RATIO_STEPS,
    CacheError,
    ProbabilityCache,
    default_top_classes,
    encode_top_classes,
    spread_is_lossless,
)
from .grid import coarsen_codes, dequantise_probability, quantise_probability
from .inference import patch_seed, single_inference_many, sisc_inference
from .selection import IGNORE_LABEL, apply_spatial_prior, select_from_top_classes
from .thresholds import CodeRefinement, ThresholdAccumulator
from .weak_labels import pseudo_weak_labels

logger = logging.getLogger(__name__)

METHODS = ("sisc", "si")

# The grid of pass 1's threshold histograms (see :mod:`.grid`); the cache's first-class grid
# (finer with the prior), how many classes per pixel it keeps (:func:`.cache.default_top_classes`)
# and its dropping rules are recorded in every cache's settings.
CODE_SHIFT = 0


@dataclass(frozen=True)
class RoundFolder:
    """Where one round's pseudo-labels live; the one layout `train` and `pseudo-label` share.

    ``out_dir/probabilities.h5`` (shard i of n > 1: ``probabilities.shard<i>of<n>.h5``),
    ``out_dir/shards/round<r>_shard<i>of<n>.{npz,json}``, ``out_dir/labels/``,
    ``out_dir/weak_labels.json``, ``out_dir/stats.json`` and, with ``colour``, ``out_dir/colour/``.
    """

    out_dir: str
    round_idx: int
    shard: tuple = (0, 1)
    colour: bool = False  # also write colour visualisations of the labels

    def __post_init__(self):
        if not 0 <= int(self.shard[0]) < int(self.shard[1]):
            raise ValueError(f"shard must be (i, n) with 0 <= i < n, got {self.shard}")

    @property
    def cache_path(self):
        i, n = self.shard
        suffix = "" if n == 1 else f".shard{i}of{n}"
        return os.path.join(str(self.out_dir), f"probabilities{suffix}.h5")

    def shard_file(self, shard, ext):
        """Accumulator (.npz) or manifest (.json) of shard ``(i, n)`` of this round."""
        return os.path.join(str(self.out_dir), "shards",
                            f"round{self.round_idx}_shard{shard[0]}of{shard[1]}{ext}")


def round_patch_seed(seed, round_idx):
    """SISC patch seed of round r: every round draws new random patches, reproducibly."""
    return int(np.random.SeedSequence([seed, round_idx]).generate_state(1)[0])


def file_digest(path):
    """SHA-256 of a file: ties cached pseudo-label entries to the weights that produced them."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _names_of(dataset):
    names = getattr(dataset, "names", None)
    return list(names) if names is not None else [dataset[i][2] for i in range(len(dataset))]


def round_settings(settings, *, round_idx, num_classes, prior, checkpoint_digest):
    """The cache metadata: everything the cached volumes depend on (not the portion)."""
    if settings.method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {settings.method!r}")
    sisc = settings.method == "sisc"
    prior_digest = "" if prior is None else hashlib.sha256(
        np.ascontiguousarray(prior, dtype=np.float32).tobytes()).hexdigest()
    longer_side = settings.longer_side
    floor = float(dequantise_probability(quantise_probability(1.0 / num_classes, CODE_SHIFT), CODE_SHIFT))
    return {
        "round": int(round_idx), "method": settings.method, "checkpoint_digest": str(checkpoint_digest),
        "K": int(settings.K) if sisc else 0, "patch_size": int(settings.patch_size) if sisc else 0,
        "seed": round_patch_seed(settings.seed, round_idx) if sisc else 0,
        "include_si": bool(settings.include_si) if sisc else True,
        "aggregation": settings.aggregation if sisc else "probability", "flip": bool(settings.flip),
        "resolution": "native" if longer_side is None else f"longer_side={int(longer_side)}",
        "num_classes": int(num_classes), "prior_digest": prior_digest,
        "top_classes": default_top_classes(prior is not None), "code_shift": CODE_SHIFT,
        "first_code_shift": PRIOR_FIRST_SHIFT if prior is not None else PLAIN_FIRST_SHIFT,
        "later_ratio_steps": RATIO_STEPS if prior is not None else PLAIN_RATIO_STEPS,
        # Lossless only without a prior: then every k_c >= the grid point of 1/C.
        "second_class_floor": 0.0 if prior is not None else floor,
        # Without a prior the floor already bounds later scores' ratios to the first by 1 / floor.
        "later_class_spread": float(LATER_CLASS_SPREAD) if prior is not None else 1.0 / floor,
        # The volumes do not depend on it, the thresholds do: recorded so a round labelled with
        # the other sampling is not reused as finished.
        "released_sampling": bool(settings.released_sampling),
    }


def _source_arrays(settings, source_stats):
    """(prior, class_mean_sizes) the settings ask for, from a ``load_source_stats`` dict."""
    needs = [what for what, on in (("the spatial prior", settings.spatial_prior),
                                   ("pseudo weak labels", settings.weak_labels)) if on]
    if needs and source_stats is None:
        raise ValueError(f"{' and '.join(needs)} need source statistics (`mlsl-gluon stats`)")
    prior = source_stats["spatial_prior"] if settings.spatial_prior else None
    sizes = source_stats["class_mean_sizes"] if settings.weak_labels else None
    return prior, sizes


def _finished_round(folder, cache_settings, portion, eta):
    """stats.json of a round already labelled with these settings (by any number of shards), or None.

    stats.json is written last, so its presence means labels and weak labels are complete.
    """
    path = os.path.join(str(folder.out_dir), "stats.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        stats = json.load(f)
    same = (stats.get("settings") == cache_settings and stats.get("portion") == float(portion)
            and stats.get("eta") == (None if eta is None else float(eta))
            and (eta is None or os.path.isfile(os.path.join(str(folder.out_dir), "weak_labels.json"))))
    if same:
        logger.info("%s: round %d was already labelled with these settings (%d shard(s)); reused",
                    folder.out_dir, folder.round_idx, stats.get("num_shards", 1))
        return stats
    return None


def run_pseudo_label_round(net, dataset, folder, *, portion, ctx, settings, source_stats=None,
                           checkpoint_digest="", regenerate=False, progress=True):
    """Pseudo-labels of one round for a target dataset (or one shard of it).

    Parameters
    ----------
    net : HybridBlock
        Fixed network with ``predict`` (parameters on every context of ``ctx``).
    dataset : Dataset
        Items ``(image uint8 HxWx3, label or None, name)``.
    folder : RoundFolder
        Round folder, round number and shard ``(i, n)``: this process labels images i, i + n,
        i + 2n, ... With n > 1 only pass 1 runs; call :func:`combine_pseudo_label_round` once
        every shard has finished.
    portion : float
        Target portion p of the class-balanced selection.
    ctx : Context or list of Context
        Devices; SISC patch batches, and SI images (one per device), are split across them.
    settings : PseudoLabelSettings
        From :func:`mlsl_gluon.config.pseudo_label_settings`; the round's patch seed is
        :func:`round_patch_seed` of ``settings.seed``, combined with each image name so every
        shard draws the same patches.
    source_stats : dict, optional
        ``load_source_stats`` result; needed for the spatial prior and for weak labels.
    checkpoint_digest : str
        Digest of the network weights; a cache made with other weights is refused.
    regenerate : bool
        Recreate a cache whose settings differ instead of refusing it.
    progress : bool
        Show tqdm progress bars.

    Returns
    -------
    dict
        The round statistics (see stats.json), or for n > 1 this shard's summary.
    """
    round_idx, (shard_i, shard_n) = folder.round_idx, folder.shard
    prior, class_mean_sizes = _source_arrays(settings, source_stats)
    num_classes = getattr(net, "num_classes", None) or dataset.num_classes
    cache_settings = round_settings(settings, round_idx=round_idx, num_classes=num_classes, prior=prior,
                                    checkpoint_digest=checkpoint_digest)
    if shard_n == 1 and not (regenerate or folder.colour):
        finished = _finished_round(folder, cache_settings, portion,
                                   None if class_mean_sizes is None else settings.eta)
        if finished is not None:
            return finished
    cache_settings["shard"] = f"{shard_i}/{shard_n}"
    cache_path = folder.cache_path
    os.makedirs(os.path.dirname(os.path.abspath(cache_path)), exist_ok=True)

    names = _names_of(dataset)
    indices = list(range(shard_i, len(dataset), shard_n))
    accumulator = ThresholdAccumulator(num_classes, CODE_SHIFT, cache_settings["released_sampling"])
    skipped = 0
    start = time.time()
    devices = len(ctx) if isinstance(ctx, (list, tuple)) else 1
    si_ahead = {}  # SI of the next uncached images, one per device, computed together
    with ProbabilityCache(cache_path, cache_settings, regenerate=regenerate) as cache:
        for pos, idx in enumerate(tqdm(indices, desc=f"pseudo-labels round {round_idx} ({settings.method})",
                                       unit="img", disable=not progress)):
            name = names[idx]
            cached = _read_intact(cache, name)
            if cached is not None:
                entry, _ = cached
                skipped += 1
            else:
                if settings.method == "sisc":
                    prob, covered = sisc_inference(net, dataset[idx][0], ctx, settings,
                                                   seed=patch_seed(cache_settings["seed"], name))
                else:
                    if name not in si_ahead:
                        uncached = (i for i in indices[pos:] if not cache.has(names[i]))
                        upcoming = list(islice(uncached, devices))
                        si_ahead = dict(zip([names[i] for i in upcoming], single_inference_many(
                            net, [dataset[i][0] for i in upcoming], ctx, flip=settings.flip,
                            longer_side=settings.longer_side)))
                    prob = si_ahead.pop(name)
                    covered = np.ones(prob.shape[1:], dtype=bool)
                if prior is not None:
                    prob = apply_spatial_prior(prob, prior)
                entry = encode_top_classes(
                    prob, cache_settings["top_classes"], valid=covered,
                    first_shift=cache_settings["first_code_shift"],
                    floor=cache_settings["second_class_floor"], spread=cache_settings["later_class_spread"],
                    ratio_steps=cache_settings["later_ratio_steps"])
                cache.write(name, entry, uncovered=int((~covered).sum()))
            # Thresholds always come from the cached (quantised) values, so a resumed pass
            # gives exactly the thresholds of an uninterrupted one.
            first_class = entry.top_class[0]
            coarse = coarsen_codes(entry.first_code, entry.first_shift, CODE_SHIFT)
            accumulator.update_codes(first_class, coarse, valid=first_class != IGNORE_LABEL)
    if skipped:
        logger.info("%s: %d of %d images were already cached", cache_path, skipped, len(indices))

    accumulator.save(folder.shard_file(folder.shard, ".npz"))
    manifest = {"cache_path": os.path.abspath(cache_path), "settings": cache_settings,
                "names": [names[i] for i in indices], "skipped": skipped,
                "seconds": round(time.time() - start, 3)}
    atomic_write_json(folder.shard_file(folder.shard, ".json"), manifest)
    if shard_n > 1:
        return {"shard": cache_settings["shard"], "images": len(indices), "skipped": skipped,
                "cache_path": manifest["cache_path"]}
    return combine_pseudo_label_round(folder, portion=portion, num_shards=1,
                                      class_mean_sizes=class_mean_sizes, eta=settings.eta, progress=progress)


def _read_intact(cache, name):
    """A cached entry, or None when absent or damaged (then pass 1 recomputes it)."""
    if not cache.has(name):
        return None
    try:
        return cache.read(name)
    except CacheError as err:
        logger.warning("%s; recomputing it", err)
        return None


def _load_manifests(folder, num_shards):
    round_idx, shard_dir = folder.round_idx, os.path.join(str(folder.out_dir), "shards")
    manifests, missing = [], []
    for i in range(num_shards):
        path = folder.shard_file((i, num_shards), ".json")
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


def _refined_thresholds(accumulator, portion, first_shift, manifests, progress):
    """Thresholds on the caches' first-class grid: pass 1's coarse histograms locate each class's
    rank bin, one sweep over the cached first-class codes of every shard counts inside it."""
    refinement = CodeRefinement(accumulator, portion, first_shift)
    total = sum(len(m["names"]) for m in manifests)
    with tqdm(total=total, desc="refining thresholds", unit="img", disable=not progress) as bar:
        for manifest in manifests:
            with ProbabilityCache(manifest["cache_path"], manifest["settings"], mode="r") as cache:
                for name in manifest["names"]:
                    first_class, first_code, shift = cache.read_first(name)
                    if shift != first_shift:
                        raise CacheError(f"{manifest['cache_path']}: entry {name!r} has first-class "
                                         f"grid {shift}, the round's settings say {first_shift}")
                    refinement.update_codes(first_class, first_code, valid=first_class != IGNORE_LABEL)
                    bar.update(1)
    return refinement.thresholds()


def combine_pseudo_label_round(folder, *, portion, num_shards, class_mean_sizes=None, eta=None,
                               progress=True):
    """Pass 2: merge the shards' accumulators, select pseudo-labels from every cache, write them.

    Parameters
    ----------
    folder : RoundFolder
        The round folder every shard wrote to (its ``shard`` is not used; ``colour`` is).
    portion, progress
        As in :func:`run_pseudo_label_round`.
    num_shards : int
        n of the shards that ran pass 1.
    class_mean_sizes : ndarray, optional
        (C,) Eq. 4 sizes; when given, PWL vectors are written to weak_labels.json.
    eta : float
        PWL factor (required with ``class_mean_sizes``).

    Returns
    -------
    dict
        The statistics also written to ``out_dir/stats.json``.
    """
    if class_mean_sizes is not None and eta is None:
        raise ValueError("pseudo weak labels need eta")
    start = time.time()
    out_dir, round_idx = str(folder.out_dir), folder.round_idx
    manifests = _load_manifests(folder, num_shards)
    accumulator = None
    for i in range(num_shards):
        acc = ThresholdAccumulator.load(folder.shard_file((i, num_shards), ".npz"))
        accumulator = acc if accumulator is None else accumulator.merge(acc)
    first_shift = manifests[0]["settings"].get("first_code_shift")
    if first_shift is None:
        raise CacheError(f"{out_dir}: round {round_idx} was cached by an older version (cache format < 4); "
                         "rerun its pass 1 with --regenerate")
    thresholds = _refined_thresholds(accumulator, portion, first_shift, manifests, progress) \
        if first_shift < accumulator.shift else accumulator.thresholds(portion)
    spread = manifests[0]["settings"]["later_class_spread"]
    if spread and not spread_is_lossless(thresholds, spread, accumulator.class_counts()):
        logger.warning("round %d: thresholds spread beyond %g; classes the cache dropped could have "
                       "won a few pixels (%s)", round_idx, spread, ", ".join(f"{k:.3g}" for k in thresholds))
    num_classes = accumulator.num_classes
    selected = np.zeros(num_classes, dtype=np.int64)
    weak, uncovered, total_pixels = {}, 0, 0
    colours = palette(num_classes) if folder.colour else None
    total = sum(len(m["names"]) for m in manifests)
    with tqdm(total=total, desc=f"selecting round {round_idx}", unit="img", disable=not progress) as bar:
        for manifest in manifests:
            with ProbabilityCache(manifest["cache_path"], manifest["settings"], mode="r") as cache:
                for name in manifest["names"]:
                    entry, n_uncovered = cache.read(name)
                    label = select_from_top_classes(entry.top_class, entry.scores(), thresholds)
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

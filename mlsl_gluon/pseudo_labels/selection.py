"""Class-balanced pseudo-label selection (CBST, used by MLSL Sec. 3.2) and the spatial prior.

Per class c, the threshold k_c is the max probability at rank floor(N_c * p) (descending) among
the N_c pixels of the WHOLE target set whose argmax is c; a pixel is labelled
argmax_c p_c / k_c when that ratio is >= 1 (SPEC section 3).

The exact definition needs every pixel's max probability in memory at once. Here each class
keeps a fixed histogram over a probability grid instead (memory C * bins * 8 bytes whatever the
number of images), and k_c is the grid point at the lower edge of the bin holding the rank-th
value. The grid is that of float16 numbers for 1 - p: steps of at most 4.9e-4 in p (so the
threshold is within 1e-3 of the exact one) and much finer near p = 1, where over-confident
networks put most pixels of the frequent classes (a uniform grid would lump them into one bin
and select far more than the portion p of them). ``shift`` drops low mantissa bits for a coarser
grid (shift 2: steps <= 2e-3 in p, relative 2^-8 in 1 - p; an option of the HDF5 cache).

Because thresholds are grid points and ``quantise_probability`` rounds down onto the grid,
p >= k_c holds exactly when quantise(p) >= quantise(k_c): a cache of quantised maps selects the
same pixels as the full-precision maps.
"""
import logging

import cv2
import numpy as np

from ..io import atomic_write_bytes, npz_bytes

logger = logging.getLogger(__name__)

IGNORE_LABEL = 255
_FLOAT16_ONE = 0x3C00  # bit pattern of float16 1.0; patterns of floats in [0, 1] are monotone


def class_argmax(prob_map):
    """Argmax over classes and the maximum of a (C, H, W) map (first class on ties).

    Equivalent to ``prob_map.argmax(0), prob_map.max(0)``; a loop over classes reads the map
    contiguously and is about 8x faster than numpy's strided reduction over axis 0.
    """
    best = np.array(prob_map[0], dtype=prob_map.dtype, copy=True)
    index = np.zeros(best.shape, dtype=np.int64)
    for c in range(1, prob_map.shape[0]):
        better = prob_map[c] > best
        np.copyto(best, prob_map[c], where=better)
        index[better] = c
    return index, best


def top_two_classes(prob_map):
    """The two most probable classes of a (C, H, W) map and their values, by a loop over classes.

    Returns
    -------
    index : ndarray
        (2, H, W) int64, most probable first (the lower class on ties).
    value : ndarray
        (2, H, W) of prob_map's dtype.
    """
    best = np.array(prob_map[0], copy=True)
    second = np.full_like(best, -np.inf)
    best_i = np.zeros(best.shape, dtype=np.int64)
    second_i = np.zeros(best.shape, dtype=np.int64)
    for c in range(1, prob_map.shape[0]):
        p = prob_map[c]
        new_best = p > best
        new_second = ~new_best & (p > second)
        # The old best drops to second where c takes the lead.
        np.copyto(second, best, where=new_best)
        np.copyto(second_i, best_i, where=new_best)
        np.copyto(second, p, where=new_second)
        second_i[new_second] = c
        np.copyto(best, p, where=new_best)
        best_i[new_best] = c
    return np.stack([best_i, second_i]), np.stack([best, second])


def num_probability_codes(shift=0):
    """Number of grid points (histogram bins) of :func:`quantise_probability` with ``shift``."""
    return (_FLOAT16_ONE >> shift) + 1


def quantise_probability(prob, shift=0):
    """Code of the largest grid point <= p (grid: float16 values of 1 - p, coarsened by ``shift``).

    Parameters
    ----------
    prob : ndarray
        Probabilities in [0, 1] (float32 or float64).
    shift : int
        Low mantissa bits dropped (0..9).

    Returns
    -------
    ndarray
        uint16 codes in [0, num_probability_codes(shift)), increasing with p.
    """
    rest = 1.0 - np.clip(np.asarray(prob, dtype=np.float32), 0.0, 1.0)
    half = rest.astype(np.float16)
    bits = half.view(np.uint16).astype(np.int32)
    bits += half.astype(np.float32) < rest  # round 1 - p up, i.e. p down
    return ((_FLOAT16_ONE - bits) >> shift).astype(np.uint16)


def dequantise_probability(code, shift=0):
    """Grid point (float32 probability) of each code of :func:`quantise_probability`."""
    bits = (_FLOAT16_ONE - (np.asarray(code, dtype=np.int32) << shift)).astype(np.uint16)
    return (1.0 - bits.view(np.float16).astype(np.float32)).astype(np.float32)


_MIN_THRESHOLD = float(np.finfo(np.float32).tiny)


class ThresholdAccumulator:
    """Streaming per-class histograms of max probabilities, for class-balanced thresholds.

    Parameters
    ----------
    num_classes : int
        C.
    shift : int
        Grid coarsening of :func:`quantise_probability` (0 = float16 grid).

    Notes
    -----
    ``update`` takes dense (C, H, W) maps, ``update_codes`` argmax classes with quantised
    max probabilities. Shards merge with ``merge``; ``state``/``from_state`` (plain arrays)
    and ``save``/``load`` (.npz) serialise an accumulator.
    """

    def __init__(self, num_classes, shift=0):
        self.num_classes = int(num_classes)
        self.shift = int(shift)
        self.bins = num_probability_codes(self.shift)
        self.hist = np.zeros((self.num_classes, self.bins), dtype=np.int64)

    def update(self, prob_map):
        """Add the pixels of one (C, H, W) probability (or prior-weighted score) map."""
        prob_map = np.asarray(prob_map)
        if prob_map.ndim != 3 or prob_map.shape[0] != self.num_classes:
            raise ValueError(f"expected a ({self.num_classes}, H, W) map, got shape {prob_map.shape}")
        index, best = class_argmax(prob_map)
        self.update_codes(index, quantise_probability(best, self.shift))

    def update_codes(self, pred, code, valid=None):
        """Add pixels given their argmax class ``pred`` and quantised max probability ``code``.

        ``valid`` (bool, same shape) excludes pixels, e.g. ones no SISC patch covered.
        """
        pred = np.asarray(pred).ravel().astype(np.int64)
        bins = np.asarray(code).ravel().astype(np.int64)
        if valid is not None:
            keep = np.asarray(valid).ravel()
            pred, bins = pred[keep], bins[keep]
        if pred.size and (pred.min() < 0 or pred.max() >= self.num_classes):
            raise ValueError(f"class index out of range [0, {self.num_classes})")
        flat = np.bincount(pred * self.bins + bins, minlength=self.num_classes * self.bins)
        self.hist += flat.reshape(self.num_classes, self.bins)

    def merge(self, other):
        """Add another accumulator's counts (e.g. from another shard); returns self."""
        if (other.num_classes, other.shift) != (self.num_classes, self.shift):
            raise ValueError(
                f"cannot merge accumulators of (classes, shift) {(other.num_classes, other.shift)} "
                f"into {(self.num_classes, self.shift)}")
        self.hist += other.hist
        return self

    def class_counts(self):
        """N_c: pixels whose argmax is c, per class."""
        return self.hist.sum(axis=1)

    def thresholds(self, portion):
        """The C class-balanced thresholds k_c for target portion p (see module docstring)."""
        if not 0.0 <= portion <= 1.0:
            raise ValueError(f"portion must be in [0, 1], got {portion}")
        k = np.ones(self.num_classes, dtype=np.float64)
        for c in range(self.num_classes):
            n_c = int(self.hist[c].sum())
            rank = int(np.floor(n_c * portion))
            if n_c == 0 or rank == 0:
                continue
            # Counts from the top bin down; the rank-th largest value lies in the first bin
            # where the running count reaches the rank.
            from_top = np.cumsum(self.hist[c, ::-1])
            top_index = int(np.searchsorted(from_top, rank))
            # A rank falling in the zero bin (possible after a spatial prior) would make
            # p_c / k_c = 0 / 0 for zero-probability pixels; the smallest positive k keeps the
            # selection rule's limit: any p_c > 0 passes, p_c = 0 never does.
            k[c] = max(dequantise_probability(self.bins - 1 - top_index, self.shift), _MIN_THRESHOLD)
        return k

    def state(self):
        """Plain-array state: {'hist': (C, bins) int64, 'shift': int64}."""
        return {"hist": self.hist.copy(), "shift": np.int64(self.shift)}

    @classmethod
    def from_state(cls, state):
        """Rebuild an accumulator from :meth:`state`."""
        hist = np.asarray(state["hist"], dtype=np.int64)
        acc = cls(hist.shape[0], int(state["shift"]))
        if hist.shape != acc.hist.shape:
            raise ValueError(f"histogram shape {hist.shape} does not match shift {acc.shift}")
        acc.hist[...] = hist
        return acc

    def save(self, path):
        """Write the state to ``path`` (.npz) atomically."""
        atomic_write_bytes(path, npz_bytes(**self.state()))

    @classmethod
    def load(cls, path):
        """Read an accumulator written by :meth:`save`; errors name the file."""
        try:
            with np.load(path) as data:
                return cls.from_state({"hist": data["hist"], "shift": data["shift"]})
        except (OSError, KeyError, ValueError) as err:
            raise ValueError(f"{path}: not a threshold accumulator file ({err})") from err


def class_balanced_thresholds(prob_maps, portion, prior=None, shift=0):
    """Class-balanced thresholds k_c over a whole target set (CBST; MLSL Sec. 3.2).

    Parameters
    ----------
    prob_maps : iterable of ndarray
        (C, H, W) float probability maps, one per target image, read one at a time.
    portion : float
        Target portion p in [0, 1].
    prior : ndarray, optional
        (C, gh, gw) spatial prior, multiplied into every map first (:func:`apply_spatial_prior`).
    shift : int
        Grid coarsening (module docstring); with 0 thresholds are within 4.9e-4 below the
        exact sort-based values.

    Returns
    -------
    ndarray
        (C,) float64 thresholds; 1.0 where a class is never the argmax or its rank is 0.
    """
    acc = None
    for prob_map in prob_maps:
        if prior is not None:
            prob_map = apply_spatial_prior(prob_map, prior)
        if acc is None:
            acc = ThresholdAccumulator(prob_map.shape[0], shift)
        acc.update(prob_map)
    if acc is None:
        raise ValueError("class_balanced_thresholds: prob_maps is empty")
    return acc.thresholds(portion)


def select_pseudo_labels(prob_map, thresholds):
    """Pseudo-label = argmax_c p_c / k_c where that maximum is >= 1, else 255 (CBST selection).

    Parameters
    ----------
    prob_map : ndarray
        (C, H, W) probabilities (prior-weighted if a spatial prior is used).
    thresholds : ndarray
        (C,) k_c from :func:`class_balanced_thresholds`.

    Returns
    -------
    ndarray
        (H, W) uint8 train ids, 255 = not selected.
    """
    k = np.asarray(thresholds, dtype=np.float64).reshape(-1, 1, 1)
    ratio = np.asarray(prob_map, dtype=np.float32) / k.astype(np.float32)
    index, best = class_argmax(ratio)
    label = index.astype(np.uint8)
    label[best < 1.0] = IGNORE_LABEL
    return label


def select_from_top_classes(top_class, top_prob, thresholds):
    """:func:`select_pseudo_labels` on a map kept as its T most probable classes per pixel.

    Parameters
    ----------
    top_class : ndarray
        (T, H, W) uint8 class ids, 255 = no class (e.g. a pixel no patch covered).
    top_prob : ndarray
        (T, H, W) probabilities of those classes.
    thresholds : ndarray
        (C,) k_c.

    Returns
    -------
    ndarray
        (H, W) uint8 train ids, 255 = not selected.
    """
    k = np.append(np.asarray(thresholds, dtype=np.float64), np.inf)  # index 255 -> never selected
    cls = np.where(top_class == IGNORE_LABEL, len(k) - 1, top_class).astype(np.int64)
    ratio = np.asarray(top_prob, dtype=np.float64) / k[cls]
    best = ratio.argmax(axis=0)
    label = np.take_along_axis(top_class, best[None], axis=0)[0].astype(np.uint8)
    label[np.take_along_axis(ratio, best[None], axis=0)[0] < 1.0] = IGNORE_LABEL
    return label


def resize_prior(prior, height, width):
    """Resize a (C, gh, gw) spatial prior bilinearly to (C, height, width) float32."""
    prior = np.asarray(prior, dtype=np.float32)
    if prior.ndim != 3:
        raise ValueError(f"spatial prior must be (C, gh, gw), got shape {prior.shape}")
    if prior.shape[1:] == (height, width):
        return prior
    # cv2 resizes (H, W, channels) arrays; channel counts up to 512 are supported.
    hwc = cv2.resize(np.ascontiguousarray(prior.transpose(1, 2, 0)), (width, height),
                     interpolation=cv2.INTER_LINEAR)
    return hwc.reshape(height, width, -1).transpose(2, 0, 1)


def apply_spatial_prior(prob_map, prior):
    """CBST-SP: multiply (C, H, W) probabilities by the spatial prior resized to (H, W)."""
    prob_map = np.asarray(prob_map, dtype=np.float32)
    if prior.shape[0] != prob_map.shape[0]:
        raise ValueError(f"spatial prior has {prior.shape[0]} classes, probabilities {prob_map.shape[0]}")
    return prob_map * resize_prior(prior, *prob_map.shape[1:])

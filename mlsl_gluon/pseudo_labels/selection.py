"""Class-balanced pseudo-label selection (CBST, used by MLSL Sec. 3.2) and the spatial prior.

Per class c, the threshold k_c is the max probability at rank floor(N_c * p) (descending) among
the N_c pixels of the WHOLE target set whose argmax is c; a pixel is labelled
argmax_c p_c / k_c when that ratio is >= 1 (SPEC section 3).

The exact definition needs every pixel's max probability in memory at once. Here each class
keeps a fixed histogram of its max probabilities instead (``bins`` equal bins on [0, 1], 65,536
by default: 10 MiB for 19 classes whatever the number of images), so the threshold is the lower
edge of the bin holding the rank-th value: at most 1/bins (1.5e-5) below the exact value.
The HDF5 cache quantises probabilities onto the same grid, so thresholds and selection are the
same whether computed from full-precision maps or from the cache.
"""
import logging

import cv2
import numpy as np

logger = logging.getLogger(__name__)

IGNORE_LABEL = 255
DEFAULT_BINS = 65536


def probability_bins(prob, bins=DEFAULT_BINS):
    """Histogram bin index of each probability: floor(p * bins), clipped to [0, bins - 1]."""
    return np.minimum((np.asarray(prob, dtype=np.float64) * bins).astype(np.int64), bins - 1)


class ThresholdAccumulator:
    """Streaming per-class histograms of max probabilities, for class-balanced thresholds.

    Parameters
    ----------
    num_classes : int
        C.
    bins : int
        Histogram bins on [0, 1]; memory is C * bins * 8 bytes.

    Notes
    -----
    ``update`` takes dense (C, H, W) maps, ``update_top1`` the argmax / max pair. Shards merge
    with ``merge``; ``state``/``from_state`` (plain arrays) and ``save``/``load`` (.npz)
    serialise an accumulator.
    """

    def __init__(self, num_classes, bins=DEFAULT_BINS):
        self.num_classes = int(num_classes)
        self.bins = int(bins)
        self.hist = np.zeros((self.num_classes, self.bins), dtype=np.int64)

    def update(self, prob_map):
        """Add the pixels of one (C, H, W) probability (or prior-weighted score) map."""
        prob_map = np.asarray(prob_map)
        if prob_map.ndim != 3 or prob_map.shape[0] != self.num_classes:
            raise ValueError(f"expected a ({self.num_classes}, H, W) map, got shape {prob_map.shape}")
        self.update_top1(prob_map.argmax(axis=0), prob_map.max(axis=0))

    def update_top1(self, pred, max_prob, valid=None):
        """Add pixels given their argmax class ``pred`` and max probability ``max_prob``.

        ``valid`` (bool, same shape) excludes pixels, e.g. ones no SISC patch covered.
        """
        pred = np.asarray(pred).ravel().astype(np.int64)
        bins = probability_bins(np.asarray(max_prob).ravel(), self.bins)
        if valid is not None:
            keep = np.asarray(valid).ravel()
            pred, bins = pred[keep], bins[keep]
        if pred.size and (pred.min() < 0 or pred.max() >= self.num_classes):
            raise ValueError(f"class index out of range [0, {self.num_classes})")
        flat = np.bincount(pred * self.bins + bins, minlength=self.num_classes * self.bins)
        self.hist += flat.reshape(self.num_classes, self.bins)

    def merge(self, other):
        """Add another accumulator's counts (e.g. from another shard); returns self."""
        if (other.num_classes, other.bins) != (self.num_classes, self.bins):
            raise ValueError(
                f"cannot merge accumulators of (classes, bins) {(other.num_classes, other.bins)} "
                f"into {(self.num_classes, self.bins)}")
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
            k[c] = (self.bins - 1 - top_index) / self.bins
        return k

    def state(self):
        """Plain-array state: {'hist': (C, bins) int64}."""
        return {"hist": self.hist.copy()}

    @classmethod
    def from_state(cls, state):
        """Rebuild an accumulator from :meth:`state`."""
        hist = np.asarray(state["hist"], dtype=np.int64)
        acc = cls(hist.shape[0], hist.shape[1])
        acc.hist[...] = hist
        return acc

    def save(self, path):
        """Write the state to ``path`` (.npz) atomically."""
        from .cache import atomic_write_bytes, npz_bytes

        atomic_write_bytes(path, npz_bytes(hist=self.hist))

    @classmethod
    def load(cls, path):
        """Read an accumulator written by :meth:`save`; errors name the file."""
        try:
            with np.load(path) as data:
                return cls.from_state({"hist": data["hist"]})
        except (OSError, KeyError, ValueError) as err:
            raise ValueError(f"{path}: not a threshold accumulator file ({err})") from err


def class_balanced_thresholds(prob_maps, portion, prior=None, bins=DEFAULT_BINS):
    """Class-balanced thresholds k_c over a whole target set (CBST; MLSL Sec. 3.2).

    Parameters
    ----------
    prob_maps : iterable of ndarray
        (C, H, W) float probability maps, one per target image, read one at a time.
    portion : float
        Target portion p in [0, 1].
    prior : ndarray, optional
        (C, gh, gw) spatial prior, multiplied into every map first (:func:`apply_spatial_prior`).
    bins : int
        Histogram resolution; thresholds are within 1/bins below the exact sort-based values.

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
            acc = ThresholdAccumulator(prob_map.shape[0], bins)
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
    label = ratio.argmax(axis=0).astype(np.uint8)
    label[ratio.max(axis=0) < 1.0] = IGNORE_LABEL
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

"""Class-balanced thresholds k_c (CBST, used by MLSL Sec. 3.2), streaming over a target set.

Per class c, k_c is the score at rank floor(N_c * p) (descending) among the N_c pixels of the
WHOLE target set whose argmax is c (SPEC section 3), the score being the max probability or,
with the spatial prior, the max of p_c(x) * prior_c(x). k_c = 1 when the class never occurs,
its rank is 0 or the score at its rank is 0 (the rules of :mod:`.selection`).

Memory stays flat in the number of images: each class keeps a histogram over the 10-bit grid of
:mod:`.grid` (C * 63491 * 8 bytes); the refinements keep one bin's worth per class. What is
exact and what is approximate:

- :meth:`ThresholdAccumulator.thresholds` returns one of the two grid points bracketing the
  bin that holds the rank: the one whose count of scores >= it is nearer floor(N_c * p) (the
  lower one on ties). Hence |k_grid - k_exact| < 2^-10 * k_exact for every k_exact >= 2^-32
  (with ``shift`` s: 2^-(10-s)), and the count selected per class is off the rank by at most
  half the population of one bin; a score at the rank below 2^-32 is taken as 0 (k = 1).
  Because k_grid is a grid point, every decision s >= k_grid is the same on cached codes as on
  the full-precision scores.
- :class:`CodeRefinement`, a second pass over finer grid codes (what a round uses: the cache's
  first-class codes, 12 mantissa bits with the prior, 11 without) that counts only inside the
  bin holding each class's rank, applies the same rule on the finer grid: |k - k_exact| <
  2^-12 * k_exact with the prior, 2^-11 without (2^-(10 - fine_shift) in general), and every
  decision s >= k is again the same on those codes as at full precision.
- :class:`ThresholdRefinement`, a second pass over the same full-precision maps that keeps only
  the scores of the one bin holding each class's rank, makes k_c exact (the float32 score at
  the rank). :func:`class_balanced_thresholds` does both passes by default.

Released threshold sampling (``released_sampling=True``, the released profile, SPEC section 9):
per image and class, only every 4th argmax pixel in raster order enters the class list, and each
class list starts with one 0 (CBST ``issegm/solve_ST.py:857-866``, MLSL
``issegm/solve_ST1.py:925-936``), so N_c counts the sampled pixels plus that 0 (a class that is
never the argmax keeps k = 1). Default off: the exact definition.
"""
import numpy as np

from ..io import atomic_write_bytes, npz_bytes
from .grid import coarsen_codes, dequantise_probability, num_probability_codes, quantise_probability
from .selection import apply_spatial_prior, class_argmax

RELEASED_STRIDE = 4  # every 4th pixel of a class per image (released code)


def released_sample_indices(pred):
    """Flat indices kept by the released sampling: every 4th pixel of each class, raster order.

    Parameters
    ----------
    pred : ndarray
        Argmax class per pixel (any shape; raster order = C order of the flattened array).

    Returns
    -------
    ndarray
        int64 indices into ``pred.ravel()``: of each class's pixels, the 1st, 5th, 9th, ...
    """
    flat = np.asarray(pred).ravel()
    order = np.argsort(flat, kind="stable")  # groups by class, raster order inside each group
    grouped = flat[order]
    position = np.arange(flat.size) - np.searchsorted(grouped, grouped, side="left")
    return np.sort(order[position % RELEASED_STRIDE == 0])


def _ranks(counts, portion):
    # floor(N_c * p); the float product as in the definition (and the released code).
    return np.floor(counts.astype(np.float64) * portion).astype(np.int64)


class ThresholdAccumulator:
    """Streaming per-class histograms of argmax scores on the grid of :mod:`.grid`.

    Parameters
    ----------
    num_classes : int
        C.
    shift : int
        Grid coarsening (0 = 2^-10 relative bins).
    released_sampling : bool
        Count only every 4th argmax pixel of each class per image, plus one 0 per class list
        (the released code's sample; module docstring). Default off (every pixel).

    Notes
    -----
    ``update`` takes dense (C, H, W) score maps, ``update_codes`` argmax classes with quantised
    scores. Counts are integers, so shards merge exactly with ``merge`` (the released 0 is
    added once, when thresholds are computed); ``state``/``from_state`` (plain arrays) and
    ``save``/``load`` (.npz) serialise an accumulator.
    """

    def __init__(self, num_classes, shift=0, released_sampling=False):
        self.num_classes = int(num_classes)
        self.shift = int(shift)
        self.released_sampling = bool(released_sampling)
        self.bins = num_probability_codes(self.shift)
        self.hist = np.zeros((self.num_classes, self.bins), dtype=np.int64)

    def update(self, score_map):
        """Add the pixels of one (C, H, W) probability (or prior-weighted score) map."""
        score_map = np.asarray(score_map)
        if score_map.ndim != 3 or score_map.shape[0] != self.num_classes:
            raise ValueError(f"expected a ({self.num_classes}, H, W) map, got shape {score_map.shape}")
        index, best = class_argmax(score_map)
        self.update_codes(index, quantise_probability(best, self.shift))

    def update_codes(self, pred, code, valid=None):
        """Add one image's pixels given their argmax class ``pred`` and quantised score ``code``.

        ``valid`` (bool, same shape) excludes pixels, e.g. ones no SISC patch covered. With
        released sampling, one call must hold exactly one image (the sample is per image).
        """
        pred, bins = _sampled(pred, code, valid, self.released_sampling, self.num_classes)
        flat = np.bincount(pred * self.bins + bins.astype(np.int64),
                           minlength=self.num_classes * self.bins)
        self.hist += flat.reshape(self.num_classes, self.bins)

    def merge(self, other):
        """Add another accumulator's counts (e.g. from another shard); returns self."""
        mine = (self.num_classes, self.shift, self.released_sampling)
        theirs = (other.num_classes, other.shift, other.released_sampling)
        if mine != theirs:
            raise ValueError(f"cannot merge accumulators of (classes, shift, released_sampling) "
                             f"{theirs} into {mine}")
        self.hist += other.hist
        return self

    def _ranked_hist(self):
        hist = self.hist.copy()
        if self.released_sampling:
            hist[hist.sum(axis=1) > 0, 0] += 1  # the 0 at the head of each existing class list
        return hist

    def class_counts(self):
        """N_c: pixels whose argmax is c, per class (sampled, with the released 0, if released)."""
        return self._ranked_hist().sum(axis=1)

    def rank_bins(self, portion):
        """Where each class's rank falls: ``(rank, bin, above)`` (C,) int64 arrays.

        ``rank`` = floor(N_c * p) (0: k_c = 1); ``bin`` the code holding the rank-th largest
        score (-1 when rank is 0); ``above`` the count in higher bins.
        """
        if not 0.0 <= portion <= 1.0:
            raise ValueError(f"portion must be in [0, 1], got {portion}")
        hist = self._ranked_hist()
        rank = _ranks(hist.sum(axis=1), portion)
        bins = np.full(self.num_classes, -1, dtype=np.int64)
        above = np.zeros(self.num_classes, dtype=np.int64)
        for c in np.flatnonzero(rank):
            # Counts from the top bin down; the rank-th largest lies in the first bin where the
            # running count reaches the rank.
            from_top = np.cumsum(hist[c, ::-1])
            top_index = int(np.searchsorted(from_top, rank[c]))
            bins[c] = self.bins - 1 - top_index
            above[c] = from_top[top_index - 1] if top_index else 0
        return rank, bins, above

    def thresholds(self, portion):
        """The C thresholds k_c on the grid, within 2^-(10-shift) of the exact ones (module docstring)."""
        rank, bins, above = self.rank_bins(portion)
        hist = self._ranked_hist()
        k = np.ones(self.num_classes, dtype=np.float64)
        for c in np.flatnonzero(bins > 0):  # bin 0 holds the zero scores: k = 1 (zero-threshold rule)
            inside = rank[c] - above[c]  # 1..n: the rank's place in its bin, from the top
            # The bin's upper edge selects `above` pixels, its lower edge `above + n`: take the
            # count nearer the rank (the lower edge on ties, selecting at least the rank).
            upper = 2 * inside < hist[c, bins[c]] and bins[c] + 1 < self.bins
            k[c] = dequantise_probability(bins[c] + int(upper), self.shift)
        return k

    def state(self):
        """Plain-array state: {'hist': (C, bins) int64, 'shift': int64, 'released_sampling': bool}."""
        return {"hist": self.hist.copy(), "shift": np.int64(self.shift),
                "released_sampling": np.bool_(self.released_sampling)}

    @classmethod
    def from_state(cls, state):
        """Rebuild an accumulator from :meth:`state`."""
        hist = np.asarray(state["hist"], dtype=np.int64)
        acc = cls(hist.shape[0], int(state["shift"]), bool(state["released_sampling"]))
        if hist.shape != acc.hist.shape:
            raise ValueError(f"histogram shape {hist.shape} does not match shift {acc.shift} "
                             f"({acc.bins} bins)")
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
                return cls.from_state({key: data[key] for key in ("hist", "shift", "released_sampling")})
        except (OSError, KeyError, ValueError) as err:
            raise ValueError(f"{path}: not a threshold accumulator file ({err})") from err


def _sampled(pred, code, valid, released_sampling, num_classes):
    # Flattened (class, code) pairs of the pixels that enter the class lists.
    pred = np.asarray(pred).ravel().astype(np.int64)
    code = np.asarray(code).ravel()
    if valid is not None:
        keep = np.asarray(valid).ravel()
        pred, code = pred[keep], code[keep]
    if pred.size and (pred.min() < 0 or pred.max() >= num_classes):
        raise ValueError(f"class index out of range [0, {num_classes})")
    if released_sampling:
        keep = released_sample_indices(pred)
        pred, code = pred[keep], code[keep]
    return pred, code


class ThresholdRefinement:
    """Second pass that makes the thresholds of a :class:`ThresholdAccumulator` exact.

    Keeps, per class, the full-precision scores of the one bin that holds its rank (memory: the
    population of that bin, a 2^-10 relative slice of the scores), then takes the rank-th
    largest among them.

    Parameters
    ----------
    accumulator : ThresholdAccumulator
        Filled by a first pass over the same maps (with the same sampling).
    portion : float
        Target portion p.
    """

    def __init__(self, accumulator, portion):
        self.accumulator = accumulator
        self.rank, self.bin, self.above = accumulator.rank_bins(portion)
        self.values = [[] for _ in range(accumulator.num_classes)]

    def update(self, score_map):
        """Add one (C, H, W) map (the same maps, in any order, as the first pass)."""
        acc = self.accumulator
        index, best = class_argmax(np.asarray(score_map))
        pred, value = _sampled(index, best, None, acc.released_sampling, acc.num_classes)
        code = quantise_probability(value, acc.shift).astype(np.int64)
        wanted = self.bin[pred] == code
        for c in np.unique(pred[wanted]):
            self.values[c].append(value[wanted & (pred == c)].astype(np.float64))

    def thresholds(self):
        """Exact k_c (the score at rank floor(N_c * p)), with the empty and zero rules."""
        k = np.ones(self.accumulator.num_classes, dtype=np.float64)
        for c in np.flatnonzero(self.rank):
            values = np.concatenate(self.values[c] + [np.zeros(0)])
            if self.accumulator.released_sampling and self.bin[c] == 0:
                values = np.append(values, 0.0)
            j = int(self.rank[c] - self.above[c])  # 1-based position inside the bin, descending
            if not 1 <= j <= values.size:
                raise ValueError(f"class {c}: the refinement pass saw {values.size} scores in the "
                                 f"rank's bin, expected at least {j}; were the maps the same?")
            value = -np.partition(-values, j - 1)[j - 1]
            if value > 0:
                k[c] = value
        return k


class CodeRefinement:
    """Second pass over finer grid codes (the cache's first-class codes) that puts the thresholds of
    a :class:`ThresholdAccumulator` on the finer grid.

    Per class, counts the fine codes inside the one coarse bin that holds the rank (memory: C
    arrays of at most 2^(shift - fine_shift) counts, flat in the number of images), then applies
    the coarse rule at the fine level: k_c is the fine grid point, of the two bracketing the
    rank's fine bin, whose count of codes >= it is nearer floor(N_c * p) (the lower on ties).
    Hence |k_c - k_exact| < 2^-(10 - fine_shift) * k_exact, and every decision s >= k_c is the
    same on fine codes as on the full-precision scores.

    Parameters
    ----------
    accumulator : ThresholdAccumulator
        Filled by pass 1 with the coarse codes of the same pixels (``coarsen_codes``).
    portion : float
        Target portion p.
    fine_shift : int
        Grid of the codes passed to :meth:`update_codes` (<= the accumulator's shift).
    """

    def __init__(self, accumulator, portion, fine_shift):
        self.accumulator = accumulator
        self.fine_shift = int(fine_shift)
        self.rank, self.bin, self.above = accumulator.rank_bins(portion)
        # The fine codes of coarse bin b run from the fine code of its lower edge to the one
        # below the next coarse point (for the top code, 1, only itself).
        coarse = np.maximum(self.bin, 0)
        top = accumulator.bins - 1
        self.first = quantise_probability(dequantise_probability(coarse, accumulator.shift),
                                          self.fine_shift).astype(np.int64)
        upper = quantise_probability(dequantise_probability(np.minimum(coarse + 1, top), accumulator.shift),
                                     self.fine_shift).astype(np.int64)
        self.counts = [np.zeros(max(1, int(u - f)) if b != top else 1, dtype=np.int64)
                       for f, u, b in zip(self.first, upper, coarse)]

    def update_codes(self, pred, code, valid=None):
        """Add one image's pixels (the same as in pass 1): argmax class and fine code."""
        acc = self.accumulator
        pred, code = _sampled(pred, code, valid, acc.released_sampling, acc.num_classes)
        code = code.astype(np.int64)
        wanted = coarsen_codes(code, self.fine_shift, acc.shift).astype(np.int64) == self.bin[pred]
        for c in np.unique(pred[wanted]):
            offsets = code[wanted & (pred == c)] - self.first[c]
            self.counts[c] += np.bincount(offsets, minlength=len(self.counts[c]))

    def thresholds(self):
        """k_c on the fine grid, with the empty and zero rules (module docstring)."""
        acc = self.accumulator
        k = np.ones(acc.num_classes, dtype=np.float64)
        for c in np.flatnonzero(self.bin > 0):  # bin 0 holds the zero scores: k = 1
            counts = self.counts[c]
            inside = int(self.rank[c] - self.above[c])
            if counts.sum() < inside:
                raise ValueError(f"class {c}: the refinement pass saw {counts.sum()} codes in the "
                                 f"rank's bin, expected at least {inside}; were the caches the same?")
            from_top = np.cumsum(counts[::-1])
            j = int(np.searchsorted(from_top, inside))  # the rank's fine bin, from the top
            fine_bin = len(counts) - 1 - j
            above = from_top[j - 1] if j else 0
            upper = 2 * (inside - above) < counts[fine_bin]
            fine_code = self.first[c] + fine_bin + int(upper)
            if fine_code < num_probability_codes(self.fine_shift):
                k[c] = dequantise_probability(fine_code, self.fine_shift)
        return k


def class_balanced_thresholds(prob_maps, portion, prior=None, shift=0, released_sampling=False,
                              exact=True):
    """Class-balanced thresholds k_c over a whole target set (CBST; MLSL Sec. 3.2).

    Parameters
    ----------
    prob_maps : sequence of ndarray
        (C, H, W) float probability maps, one per target image, read one at a time (twice
        when ``exact``: pass a list, or any re-iterable sequence).
    portion : float
        Target portion p in [0, 1].
    prior : ndarray, optional
        (C, gh, gw) spatial prior, multiplied into every map first (:func:`apply_spatial_prior`).
    shift : int
        Grid coarsening (module docstring).
    released_sampling : bool
        The released code's every-4th-pixel sample with a prepended 0 (module docstring).
    exact : bool
        True (default): the exact definition, by a second pass (:class:`ThresholdRefinement`).
        False: one pass, grid thresholds (relative error < 2^-(10-shift)).

    Returns
    -------
    ndarray
        (C,) float64 thresholds; 1.0 where a class is never the argmax, its rank is 0 or the
        score at its rank is 0.
    """
    if exact and iter(prob_maps) is prob_maps:
        raise ValueError("class_balanced_thresholds: exact thresholds read the maps twice; pass a "
                         "sequence (e.g. a list), not a one-shot iterator, or exact=False")

    def scores():
        for prob_map in prob_maps:
            yield prob_map if prior is None else apply_spatial_prior(prob_map, prior)

    acc = None
    for score_map in scores():
        if acc is None:
            acc = ThresholdAccumulator(score_map.shape[0], shift, released_sampling)
        acc.update(score_map)
    if acc is None:
        raise ValueError("class_balanced_thresholds: prob_maps is empty")
    if not exact:
        return acc.thresholds(portion)
    refinement = ThresholdRefinement(acc, portion)
    for score_map in scores():
        refinement.update(score_map)
    return refinement.thresholds()

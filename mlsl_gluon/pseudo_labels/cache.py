"""HDF5 cache of per-image score volumes for one pseudo-label round.

CBST wrote one float32 C x H x W .npy per image (152 MiB at 1024x2048x19). Selection
(argmax_c s_c / k_c where >= 1, :mod:`.selection`) only needs, per pixel, the classes that can
win with their scores s_c (probabilities, multiplied by the spatial prior when one is used:
the cache holds exactly what is ranked and selected). An entry (:class:`CacheEntry`) keeps the
T highest-scoring classes per pixel at full resolution (class ids as uint8, 255 = none):

- the first class's score s_1 as its code on the relative grid of :mod:`.grid`, rounded down:
  12 mantissa bits with the prior (``PRIOR_FIRST_SHIFT``, bins < 2^-12 of s_1 wide), 11
  without (``PLAIN_FIRST_SHIFT``);
- each later class's score as its ratio to the first's grid point, log2 rounded to the nearest
  1/1024 with the prior (``RATIO_STEPS``: relative error <= 2^-11), 1/512 without
  (``PLAIN_RATIO_STEPS``: <= 2^-10), on top of the first's grid error (< 2^-12 with the prior,
  < 2^-11 without, in the direction of a score rounded down).

Without a prior the first class's bits buy more agreement per byte than the later ones' (the
thresholds are ranks among first scores): both splits fit the 2 MiB budget per
1024x2048x19 image, measured by tools/bench_pseudo_labels.py.

What is exact and what is approximate, with the thresholds a round computes from the cached
first-class codes (:class:`.thresholds.CodeRefinement`: grid points of the first-class grid):

- every test s_1 >= k_c of a pixel's first class is the same as at full precision;
- a test s_c >= k_c of a later class, and the order of two ratios s_a / k_a, s_b / k_b, can
  differ from full precision only when the two sides are within the later classes' error of
  each other (relative: 2^-11 + 2^-12 with the prior, 2^-10 + 2^-11 without);
- a class ranked below T can win only where s_c >= k_c and s_c / k_c beats the T higher
  scores, i.e. where k_c is much smaller than their thresholds. The spatial prior does that
  (it makes the thresholds of rare classes small), so with the prior T = 4
  (:func:`default_top_classes`); without a prior thresholds are all within [1/C, 1] and T = 2.
  tests/test_pseudo_cache.py bounds the agreement with the exact definition (exact sort, full
  precision) on random and structured maps; tools/bench_pseudo_labels.py measures it on
  network maps.

Two rules drop a later class (class 255), which can only make it lose, and zeros compress
better than its codes would:

- ``floor``: without a prior every k_c is at least the grid point of 1/C, so a later class
  scoring below it can never pass s_c >= k_c (lossless).
- ``spread`` R (with the prior R = ``LATER_CLASS_SPREAD``; without, 1 / floor): drop a later
  class c with s_c < s_1 / R, s_1 being the pixel's first score (of class a). It can win only if
  s_c / k_c >= s_1 / k_a, i.e. s_c >= s_1 * k_c / k_a, so dropping it is lossless whenever the
  round's thresholds satisfy min_c k_c >= max_a k_a / R over the classes a that are the argmax
  somewhere (:func:`spread_is_lossless`; the round's second pass checks it and warns
  otherwise). R also bounds the ratio codes (log2 R octaves). A larger R keeps more later
  classes and makes entries larger (tools/bench_pseudo_labels.py prints both).

Codes of neighbouring pixels are close, so they are stored as residuals: third differences
(the 2-D difference c[y, x] - c[y, x-1] - c[y-1, x] + c[y-1, x-1], differenced once more along
x; zigzag-mapped to small unsigned numbers) with HDF5 byte shuffling and gzip (level 4; class
ids level 6) in 256 x 256 chunks; first-class codes, later ratio codes (0 where dropped, and
near 0 at the edge of the kept region, so that edge costs little) and classes are separate
datasets.

Entries are written data first, flushed, then marked with a ``complete`` attribute and CRC-32s
of their bytes (one of the first class alone, which the thresholds' sweep reads); an entry
without the mark (a killed writer) is treated as absent and rewritten, and an entry whose bytes
do not match its CRC is refused. A file whose metadata (including the format version) differs
from the current settings is refused (naming the file and the fields) unless
``regenerate=True``, which deletes and recreates it.
"""
import logging
import os
import zlib
from dataclasses import dataclass

import h5py
import numpy as np

from .grid import code_dtype, dequantise_probability, quantise_probability
from .selection import IGNORE_LABEL, top_classes

logger = logging.getLogger(__name__)

FORMAT_VERSION = 4  # 4: finer first-class grid, later classes as ratios (3: 16-bit codes for all)
DEFAULT_TOP_CLASSES = 4  # with the spatial prior; 2 without (module docstring)
PRIOR_FIRST_SHIFT = -2  # first-class grid with the prior: 12 mantissa bits (module docstring)
LATER_CLASS_SPREAD = 16.0  # R of the round's dropping rule with the prior (module docstring)
RATIO_STEPS = 1024  # later-class ratio steps per octave with the prior (2^-11 relative, rounded)
PLAIN_FIRST_SHIFT, PLAIN_RATIO_STEPS = -1, 512  # without a prior (module docstring)
GZIP_LEVEL = 4  # of the code residuals; the class ids compress far better at 6 for little time
CLASS_GZIP_LEVEL = 6


class CacheError(RuntimeError):
    """A cache file or entry that cannot be used (stale metadata, corrupted, half-written)."""


@dataclass
class CacheEntry:
    """One image's cached top classes (module docstring).

    ``top_class`` (T, H, W) uint8, highest score first, 255 = no class; ``first_code`` (H, W)
    codes of the first class's score on the grid ``first_shift``; ``later_code`` (T - 1, H, W)
    uint16 ratio codes v of the later classes: s_c = s_1 * 2^-((L - v) / ratio_steps), s_1 the
    first class's grid point and L = round(log2(spread) * ratio_steps).
    """

    top_class: np.ndarray
    first_code: np.ndarray
    later_code: np.ndarray
    first_shift: int
    spread: float
    ratio_steps: int = RATIO_STEPS

    def scores(self):
        """(T, H, W) float64 scores of the kept classes (0 where the class is 255)."""
        first = dequantise_probability(self.first_code, self.first_shift)
        steps = _ratio_range(self.spread, self.ratio_steps) - self.later_code.astype(np.float64)
        later = first[None] * np.exp2(-steps / self.ratio_steps)
        out = np.concatenate([first[None], later])
        out[self.top_class == IGNORE_LABEL] = 0.0
        return out


def _ratio_range(spread, ratio_steps):
    return int(round(np.log2(spread) * ratio_steps))


def encode_top_classes(score_map, top=DEFAULT_TOP_CLASSES, valid=None, first_shift=0, floor=0.0,
                       spread=LATER_CLASS_SPREAD, ratio_steps=RATIO_STEPS):
    """Keep the ``top`` highest-scoring classes per pixel: the first with its grid code, the later
    ones as ratios to it (module docstring).

    Parameters
    ----------
    score_map : ndarray
        (C, H, W) float probabilities, or prior-weighted scores, in [0, 1].
    top : int
        T, classes kept per pixel.
    valid : ndarray, optional
        (H, W) bool; invalid pixels get class 255 everywhere.
    first_shift : int
        Grid of the first class's codes (:func:`quantise_probability`; -2 = 12 mantissa bits).
    floor : float
        Classes after the first whose score is below this are dropped (class 255).
    spread : float
        R: classes after the first whose score is below (first score) / R are dropped too;
        lossless while max_a k_a / min_c k_c <= R (module docstring).
    ratio_steps : int
        Steps per octave of the later classes' ratio codes (relative error <= 2^-1 / steps).

    Returns
    -------
    CacheEntry
    """
    if not spread > 1.0:
        raise ValueError(f"spread must be > 1, got {spread}")
    score_map = np.asarray(score_map, dtype=np.float32)
    order, top_score = top_classes(score_map, top)
    top_class = order.astype(np.uint8)
    first_code = quantise_probability(np.maximum(top_score[0], 0.0), first_shift)
    # float32 is enough for the ratios: its log2 is off by < 1e-3 of a step.
    first = dequantise_probability(first_code, first_shift).astype(np.float32)
    later = top_score[1:]
    dropped = (later < floor) | (later * np.float32(spread) < top_score[:1]) | ~np.isfinite(later)
    dropped |= first[None] <= 0
    with np.errstate(divide="ignore", invalid="ignore"):
        steps = np.log2(first[None] / later)
    steps *= ratio_steps
    # A later score can exceed the first's grid point (rounded down) by < one grid step: ratio 1.
    limit = _ratio_range(spread, ratio_steps)
    np.clip(np.rint(steps, out=steps), 0, limit, out=steps)
    steps[dropped] = limit
    later_code = (limit - steps).astype(np.uint16)
    top_class[1:][dropped] = IGNORE_LABEL
    if valid is not None:
        top_class[:, ~valid] = IGNORE_LABEL
        first_code[~valid] = 0
        later_code[:, ~valid] = 0
    return CacheEntry(top_class, first_code, later_code, int(first_shift), float(spread), int(ratio_steps))


def default_top_classes(with_prior):
    """T kept per pixel by default: 4 with the spatial prior, 2 without (module docstring)."""
    return DEFAULT_TOP_CLASSES if with_prior else 2


def spread_is_lossless(thresholds, spread, class_counts):
    """True when dropping later classes below (first score) / ``spread`` cannot change a label:
    min_c k_c >= max_a k_a / spread, a over the classes that are the argmax somewhere
    (``class_counts`` N_a > 0: only they can be a pixel's first class; module docstring)."""
    k = np.asarray(thresholds, dtype=np.float64)
    occurring = np.asarray(class_counts) > 0
    return bool(not occurring.any() or k.min() * spread >= k[occurring].max())


def _signed(dtype):
    return {np.dtype(np.uint16): np.int16, np.dtype(np.uint32): np.int32}[np.dtype(dtype)]


def _to_residuals(code, order):
    """(T, H, W) codes -> zigzag-mapped residuals modulo 2^bits (exactly invertible): ``order``
    2 = 2-D differences, 3 = one more difference along x (a smooth field's 2-D differences vary
    slowly)."""
    dtype = code.dtype
    bits = 8 * dtype.itemsize
    d = np.diff(code.astype(np.int64), axis=1, prepend=0)
    for _ in range(order - 1):
        d = np.diff(d, axis=2, prepend=0)
    d = d.astype(_signed(dtype))  # wraps modulo 2^bits
    return ((d << 1) ^ (d >> (bits - 1))).view(dtype)


def _from_residuals(zig, order):
    z = np.asarray(zig)
    dtype = z.dtype
    d = (z >> 1) ^ (dtype.type(0) - (z & 1))
    for _ in range(order - 1):
        d = np.cumsum(d, axis=2, dtype=dtype)
    return np.cumsum(d, axis=1, dtype=dtype)


FIRST_ORDER = 3  # residual orders (:func:`_to_residuals`): measured smallest on network maps
LATER_ORDER = 3


def _entry_key(name):
    # HDF5 treats '/' as a group separator; names like 'aachen/aachen_000000_000019' keep
    # one flat level of entries instead.
    return name.replace("/", "|")


def _crc(*arrays):
    crc = 0
    for a in arrays:
        crc = zlib.crc32(np.ascontiguousarray(a).tobytes(), crc)
    return crc & 0xFFFFFFFF


class ProbabilityCache:
    """One round's HDF5 cache file: ``{image name: CacheEntry}`` (module docstring).

    Parameters
    ----------
    path : str
        The .h5 file.
    metadata : dict
        Settings that make the cached volumes valid (round, checkpoint digest, K, patch size,
        seed, classes, resolution, ...): str / int / float / bool values.
    regenerate : bool
        Delete and recreate the file when its metadata differs instead of refusing it.
    mode : {'a', 'r'}
        Append (create if absent) or read-only.
    """

    def __init__(self, path, metadata, regenerate=False, mode="a"):
        self.path = str(path)
        self.metadata = {k: metadata[k] for k in sorted(metadata)}
        self.metadata["format_version"] = FORMAT_VERSION
        if mode not in ("a", "r"):
            raise ValueError(f"mode must be 'a' or 'r', got {mode!r}")
        if mode == "r" and not os.path.exists(self.path):
            raise CacheError(f"{self.path}: cache file does not exist")
        if os.path.exists(self.path):
            try:
                self._file = h5py.File(self.path, mode)
            except OSError as err:
                if not regenerate:
                    raise CacheError(f"{self.path}: cannot open the HDF5 cache, damaged ({err}); rerun "
                                     "with --regenerate to recompute it (`train --resume` does so "
                                     "by itself)") from err
                logger.warning("%s: unreadable cache, regenerating (%s)", self.path, err)
                os.unlink(self.path)
                self._file = h5py.File(self.path, "a")
                self._write_metadata()
                return
            mismatch = self._mismatching_fields()
            if mismatch and regenerate and mode == "a":
                logger.warning("%s: cache settings differ (%s), regenerating", self.path,
                               ", ".join(mismatch))
                self._file.close()
                os.unlink(self.path)
                self._file = h5py.File(self.path, "a")
                self._write_metadata()
            elif mismatch:
                self._file.close()
                raise CacheError(
                    f"{self.path}: cache was made with different settings; mismatching fields: "
                    + "; ".join(mismatch) + ". Use another cache path or regenerate=True (--regenerate).")
        else:
            self._file = h5py.File(self.path, "a")
            self._write_metadata()

    def _write_metadata(self):
        for key, value in self.metadata.items():
            self._file.attrs[key] = value
        self._file.flush()

    def _mismatching_fields(self):
        found = dict(self._file.attrs)
        out = []
        for key in sorted(set(found) | set(self.metadata)):
            want, have = self.metadata.get(key, "<absent>"), found.get(key, "<absent>")
            if isinstance(have, bytes):
                have = have.decode()
            if isinstance(have, np.generic):
                have = have.item()
            if have != want:
                out.append(f"{key}: cache has {have!r}, expected {want!r}")
        return out

    def close(self):
        """Close the file."""
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def names(self):
        """Names of complete entries, sorted."""
        return sorted(self._file[k].attrs["name"] for k in self._file.keys()
                      if self._file[k].attrs.get("complete", False))

    def has(self, name):
        """True when a complete entry for ``name`` exists (half-written ones do not count)."""
        key = _entry_key(name)
        return key in self._file and bool(self._file[key].attrs.get("complete", False))

    def write(self, name, entry, uncovered=0):
        """Store one image's entry; a previous (e.g. half-written) entry is replaced.

        Parameters
        ----------
        name : str
            Image name.
        entry : CacheEntry
            From :func:`encode_top_classes`.
        uncovered : int
            Pixels no patch covered (recorded).
        """
        top_class = np.asarray(entry.top_class, dtype=np.uint8)
        first_code = np.asarray(entry.first_code, dtype=code_dtype(entry.first_shift))
        later_code = np.asarray(entry.later_code, dtype=np.uint16)
        if (top_class.ndim != 3 or first_code.shape != top_class.shape[1:]
                or later_code.shape != (len(top_class) - 1,) + top_class.shape[1:]):
            raise ValueError(f"{self.path}: entry {name!r} needs (T, H, W) classes, (H, W) first codes "
                             f"and (T-1, H, W) later codes, got {top_class.shape}, {first_code.shape} "
                             f"and {later_code.shape}")
        key = _entry_key(name)
        if key in self._file:
            del self._file[key]
        group = self._file.create_group(key)
        chunks = (1,) + tuple(min(s, 256) for s in top_class.shape[1:])
        options = dict(chunks=chunks, compression="gzip", compression_opts=GZIP_LEVEL, shuffle=True)
        group.create_dataset("top_class", data=top_class, chunks=chunks, compression="gzip",
                             compression_opts=CLASS_GZIP_LEVEL)
        group.create_dataset("first_code_residual", data=_to_residuals(first_code[None], FIRST_ORDER),
                             **options)
        if len(later_code):
            group.create_dataset("later_code_residual", data=_to_residuals(later_code, LATER_ORDER),
                                 **options)
        group.attrs["name"] = name
        group.attrs["uncovered"] = int(uncovered)
        group.attrs["first_shift"] = int(entry.first_shift)
        group.attrs["spread"] = float(entry.spread)
        group.attrs["ratio_steps"] = int(entry.ratio_steps)
        group.attrs["crc32_first"] = _crc(top_class[0], first_code)
        group.attrs["crc32"] = _crc(top_class, first_code, later_code)
        self._file.flush()
        # Marking completion last means a writer killed before this line leaves an entry that
        # `has` reports as absent.
        group.attrs["complete"] = True
        self._file.flush()

    def _group(self, name):
        key = _entry_key(name)
        if key not in self._file:
            raise CacheError(f"{self.path}: no entry for image {name!r}")
        group = self._file[key]
        if not group.attrs.get("complete", False):
            raise CacheError(f"{self.path}: entry {name!r} is half-written (no 'complete' mark); "
                             "rerun the pass to recompute it")
        return group

    def _first(self, group, name):
        try:
            first_class = group["top_class"][0]
            first_code = _from_residuals(group["first_code_residual"][()], FIRST_ORDER)[0]
        except (OSError, KeyError) as err:
            raise CacheError(f"{self.path}: entry {name!r} is unreadable ({err})") from err
        return first_class, first_code

    def read_first(self, name):
        """``(first class uint8 (H, W), first code (H, W), first_shift)`` of an entry, checked by
        its own CRC: what the thresholds' refinement pass needs, without decoding later classes.

        Raises
        ------
        CacheError
            As :meth:`read`.
        """
        group = self._group(name)
        first_class, first_code = self._first(group, name)
        if _crc(first_class, first_code) != int(group.attrs["crc32_first"]):
            raise CacheError(f"{self.path}: entry {name!r} is corrupted (CRC mismatch)")
        return first_class, first_code, int(group.attrs["first_shift"])

    def read(self, name):
        """Return ``(CacheEntry, uncovered)`` of an entry.

        Raises
        ------
        CacheError
            When the entry is missing, half-written, unreadable or fails its CRC check.
        """
        group = self._group(name)
        first_class, first_code = self._first(group, name)
        try:
            top_class = group["top_class"][()]
            if "later_code_residual" in group:
                later = _from_residuals(group["later_code_residual"][()], LATER_ORDER)
            else:
                later = np.zeros((0,) + first_code.shape, dtype=np.uint16)
        except (OSError, KeyError) as err:
            raise CacheError(f"{self.path}: entry {name!r} is unreadable ({err})") from err
        if _crc(top_class, first_code, later) != int(group.attrs["crc32"]):
            raise CacheError(f"{self.path}: entry {name!r} is corrupted (CRC mismatch)")
        entry = CacheEntry(top_class, first_code, later, int(group.attrs["first_shift"]),
                           float(group.attrs["spread"]), int(group.attrs["ratio_steps"]))
        return entry, int(group.attrs.get("uncovered", 0))

    def entry_nbytes(self, name):
        """Bytes an entry occupies on disk (compressed)."""
        group = self._file[_entry_key(name)]
        return sum(group[d].id.get_storage_size() for d in group)

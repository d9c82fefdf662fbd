"""HDF5 cache of per-image probability volumes for one pseudo-label round.

CBST wrote one float32 C x H x W .npy per image (152 MiB at 1024x2048x19). Selection only
needs, per pixel, the classes that can win argmax_c p_c / k_c with their probabilities, so an
entry keeps the T most probable classes per pixel (default 2) at full resolution: class ids as
uint8 and probabilities as codes of the threshold grid of :mod:`.selection`
(``quantise_probability`` with ``shift``, default 0). The most probable class's code is stored
exactly: the threshold histograms are built from it, and as thresholds are grid points,
p_1 >= k_c holds for a cached pixel exactly when it holds at full precision.

The same holds for the second and later classes on the same grid (the default). They only
matter where one of them wins p_t / k_t > p_1 / k_1, so ``second_shift`` can round their codes
down onto a coarser grid (2: steps <= 2e-3 in p, about 10 % smaller entries): that changes the
label only of a pixel whose two ratios, or whose p_t and k_t, are within a few grid steps of a
tie, but such pixels are common where second classes often win. Measured with
tools/bench_pseudo_labels.py: agreement with full-precision labels 0.99925 -> 0.99927 for a
briefly trained network, 0.99892 -> 0.99792 for a random-weight one; it is off by default. What
is lost by default: classes beyond the T-th (with T = 1, every pixel where the second class
wins) and the exact order of ratios that differ by less than a grid step.

A second class whose probability is below ``floor`` is dropped (class 255): without a spatial
prior every k_c >= the grid point of 1/C, so such a class can never be selected, and dropping
it makes the entry much more compressible (zeros compress better than the dropped codes would).

Codes of neighbouring pixels are close, so they are stored as 2-D differences
(c[y, x] - c[y, x-1] - c[y-1, x] + c[y-1, x-1], zigzag-mapped to small unsigned numbers) with
HDF5 byte shuffling and gzip (level 4: about 11 % smaller than level 1 for 0.1 s more per
1024x2048 image, a few percent of the SISC forwards; level 9 takes 3 s for 9 % less) in
256 x 256 chunks. Storing the codes at half resolution (bilinear back) would cut them by 60 %,
but p_1 is the maximum of smooth class maps, kinked where the argmax changes, and labels then
flip along class boundaries and threshold contours: 0.2-0.3 % more of the pixels of a briefly
trained network's maps disagree with full-precision labels, beyond a 0.1 % budget; not done.

Entries are written data first, flushed, then marked with a ``complete`` attribute and a
CRC-32 of their bytes; an entry without the mark (a killed writer) is treated as absent and
rewritten, and an entry whose bytes do not match its CRC is refused. A file whose metadata
(including the format version and ``second_shift``) differs from the current settings is
refused (naming the file and the fields) unless ``regenerate=True``, which deletes and
recreates it.
"""
import logging
import os
import zlib

import h5py
import numpy as np

from .selection import IGNORE_LABEL, class_argmax, quantise_probability, top_two_classes

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: first class and later classes in separate datasets
SECOND_SHIFT = 0
GZIP_LEVEL = 4


class CacheError(RuntimeError):
    """A cache file or entry that cannot be used (stale metadata, corrupted, half-written)."""


def encode_top_classes(prob_map, top=2, valid=None, shift=0, floor=0.0):
    """Keep the ``top`` most probable classes per pixel with their quantised probabilities.

    Parameters
    ----------
    prob_map : ndarray
        (C, H, W) float probabilities (or prior-weighted scores) in [0, 1].
    top : int
        T, classes kept per pixel.
    valid : ndarray, optional
        (H, W) bool; invalid pixels get class 255 and code 0 (probability 0).
    shift : int
        Grid coarsening of :func:`quantise_probability`.
    floor : float
        Classes after the first whose probability is below this are dropped (class 255).

    Returns
    -------
    top_class : ndarray
        (T, H, W) uint8, most probable first.
    top_code : ndarray
        (T, H, W) uint16 codes (:func:`dequantise_probability` gives the probabilities).
    """
    prob_map = np.asarray(prob_map, dtype=np.float32)
    if top == 1:
        order, top_prob = (a[None] for a in class_argmax(prob_map))
    elif top == 2:
        order, top_prob = top_two_classes(prob_map)
    else:
        order = np.argpartition(-prob_map, top - 1, axis=0)[:top]
        top_prob = np.take_along_axis(prob_map, order, axis=0)
        rank = np.argsort(-top_prob, axis=0, kind="stable")  # argpartition leaves them unordered
        order = np.take_along_axis(order, rank, axis=0)
        top_prob = np.take_along_axis(top_prob, rank, axis=0)
    top_class = order.astype(np.uint8)
    top_code = quantise_probability(top_prob, shift)
    if floor > 0 and top > 1:
        dropped = top_prob[1:] < floor
        top_class[1:][dropped] = IGNORE_LABEL
        top_code[1:][dropped] = 0
    if valid is not None:
        top_class[:, ~valid] = IGNORE_LABEL
        top_code[:, ~valid] = 0
    return top_class, top_code


def coarsen_later_codes(top_code, second_shift=SECOND_SHIFT):
    """Codes as the cache stores them: rows 1.. (second and later classes) rounded down onto a
    grid ``second_shift`` bits coarser; row 0 unchanged.

    Rounding a code down clears its low bits; ``dequantise_probability`` of the result is the
    largest point of the coarser grid (``quantise_probability`` with ``shift + second_shift``)
    <= p, as both grids drop low mantissa bits of the float16 of 1 - p.
    """
    out = np.array(top_code, dtype=np.uint16, copy=True)
    out[1:] = (out[1:] >> second_shift) << second_shift
    return out


def _to_differences(code):
    # (T, H, W) uint16 -> zigzag-mapped 2-D differences modulo 2^16 (exactly invertible).
    c = code.astype(np.int32)
    dx = np.diff(c, axis=2, prepend=0)
    d = np.diff(dx, axis=1, prepend=0).astype(np.int16)  # wraps modulo 2^16
    return ((d << 1) ^ (d >> 15)).view(np.uint16)


def _from_differences(zig):
    z = np.asarray(zig, dtype=np.uint16)
    d = (z >> 1) ^ (np.uint16(0) - (z & 1))
    return np.cumsum(np.cumsum(d, axis=1, dtype=np.uint16), axis=2, dtype=np.uint16)


def _entry_key(name):
    # HDF5 treats '/' as a group separator; names like 'aachen/aachen_000000_000019' keep
    # one flat level of entries instead.
    return name.replace("/", "|")


def _crc(top_class, top_code):
    return zlib.crc32(top_code.tobytes(), zlib.crc32(top_class.tobytes())) & 0xFFFFFFFF


class ProbabilityCache:
    """One round's HDF5 cache file: ``{image name: top classes + 16-bit probabilities}``.

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
    second_shift : int
        Bits by which the grid of the second and later classes' codes is coarser than the
        first class's (0..9; module docstring). Recorded in the file's metadata.
    """

    def __init__(self, path, metadata, regenerate=False, mode="a", second_shift=SECOND_SHIFT):
        self.path = str(path)
        if not 0 <= int(second_shift) <= 9:
            raise ValueError(f"second_shift must be in 0..9, got {second_shift!r}")
        self.second_shift = int(second_shift)
        self.metadata = {k: metadata[k] for k in sorted(metadata)}
        self.metadata["format_version"] = FORMAT_VERSION
        self.metadata["second_code_shift"] = self.second_shift
        if mode not in ("a", "r"):
            raise ValueError(f"mode must be 'a' or 'r', got {mode!r}")
        if mode == "r" and not os.path.exists(self.path):
            raise CacheError(f"{self.path}: cache file does not exist")
        if os.path.exists(self.path):
            try:
                self._file = h5py.File(self.path, mode)
            except OSError as err:
                if not regenerate:
                    raise CacheError(f"{self.path}: cannot open the HDF5 cache ({err}); delete it or "
                                     "rerun with regenerate=True (--regenerate)") from err
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

    def write(self, name, top_class, top_code, uncovered=0):
        """Store one image's entry; a previous (e.g. half-written) entry is replaced.

        Parameters
        ----------
        name : str
            Image name.
        top_class, top_code : ndarray
            (T, H, W) from :func:`encode_top_classes`. Codes of rows 1.. are rounded down
            onto the ``second_shift`` grid (:func:`coarsen_later_codes`): :meth:`read`
            returns them so.
        uncovered : int
            Pixels no patch covered (recorded).
        """
        top_class = np.asarray(top_class, dtype=np.uint8)
        top_code = np.asarray(top_code, dtype=np.uint16)
        if top_class.ndim != 3 or top_class.shape != top_code.shape:
            raise ValueError(f"{self.path}: entry {name!r} needs (T, H, W) classes and codes of one "
                             f"shape, got {top_class.shape} and {top_code.shape}")
        key = _entry_key(name)
        if key in self._file:
            del self._file[key]
        group = self._file.create_group(key)
        chunks = (1,) + tuple(min(s, 256) for s in top_class.shape[1:])
        options = dict(chunks=chunks, compression="gzip", compression_opts=GZIP_LEVEL, shuffle=True)
        group.create_dataset("top_class", data=top_class, **options)
        group.create_dataset("top_code_diff", data=_to_differences(top_code[:1]), **options)
        if len(top_code) > 1:
            later = top_code[1:] >> self.second_shift
            group.create_dataset("later_code_diff", data=_to_differences(later), **options)
        group.attrs["name"] = name
        group.attrs["uncovered"] = int(uncovered)
        group.attrs["crc32"] = _crc(top_class, coarsen_later_codes(top_code, self.second_shift))
        self._file.flush()
        # Marking completion last means a writer killed before this line leaves an entry that
        # `has` reports as absent.
        group.attrs["complete"] = True
        self._file.flush()

    def read(self, name):
        """Return ``(top_class uint8 (T,H,W), top_code uint16 (T,H,W), uncovered)`` of an entry.

        Raises
        ------
        CacheError
            When the entry is missing, half-written, unreadable or fails its CRC check.
        """
        key = _entry_key(name)
        if key not in self._file:
            raise CacheError(f"{self.path}: no entry for image {name!r}")
        group = self._file[key]
        if not group.attrs.get("complete", False):
            raise CacheError(f"{self.path}: entry {name!r} is half-written (no 'complete' mark); "
                             "rerun the pass to recompute it")
        try:
            top_class = group["top_class"][()]
            top_code = _from_differences(group["top_code_diff"][()])
            if "later_code_diff" in group:
                later = _from_differences(group["later_code_diff"][()]) << self.second_shift
                top_code = np.concatenate([top_code, later])
        except (OSError, KeyError) as err:
            raise CacheError(f"{self.path}: entry {name!r} is unreadable ({err})") from err
        if _crc(top_class, top_code) != int(group.attrs["crc32"]):
            raise CacheError(f"{self.path}: entry {name!r} is corrupted (CRC mismatch)")
        return top_class, top_code, int(group.attrs.get("uncovered", 0))

    def entry_nbytes(self, name):
        """Bytes an entry occupies on disk (compressed)."""
        group = self._file[_entry_key(name)]
        return sum(group[d].id.get_storage_size() for d in group)

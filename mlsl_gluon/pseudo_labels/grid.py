"""The relative probability grids shared by the threshold histograms and the HDF5 cache.

Selection compares scores s (probabilities, or probabilities times the spatial prior) with
thresholds k_c and with each other as ratios s_c / k_c, so what must be resolved is s relative
to its own size. With the spatial prior the ranked scores are products like 1e-3 or 1e-5; an
over-confident network puts most pixels of a frequent class within 1e-5 of 1. The grid is
therefore relative at both ends:

- for s <= 1/2, the grid points are the float32 numbers in [2^-32, 1/2] with the mantissa cut
  to M = 10 - ``shift`` bits, ``shift`` in -3..9 (a log grid: consecutive points differ by at
  most 2^-M of s), plus 0;
- for s > 1/2, the points are 1 - g for the same points g < 1/2 (consecutive points differ by at
  most 2^-M of 1 - s, hence of s).

:func:`quantise_probability` maps s to the code of the largest grid point <= s (it rounds
down); codes increase with s. For every grid point k and every s, s >= k exactly when
code(s) >= code(k): a threshold on the grid makes the same decisions on codes as on the
full-precision scores. A bin (all s of one code) spans less than 2^-M of its values in
relative terms: 2^-10 = 9.8e-4 with ``shift`` 0 (codes fit uint16), 2^-12 with ``shift`` -2
(uint32). Scores below 2^-32 share code 0 with 0. Grids are nested: every point of a coarser
grid is a point of each finer one, so :func:`coarsen_codes` maps fine codes to coarse ones
exactly.
"""
import numpy as np

_MANTISSA_BITS = 23  # of float32
_MIN_EXPONENT = 127 - 32  # biased float32 exponent of 2^-32, the smallest nonzero grid point
_LOW_POINTS = 31  # exponents of [2^-32, 1/2): 2^-32 .. 2^-2
MIN_SHIFT = -3  # the finest grid: 13 mantissa bits


def _mantissa_bits(shift):
    shift = int(shift)
    if not MIN_SHIFT <= shift <= 9:
        raise ValueError(f"grid shift must be in {MIN_SHIFT}..9, got {shift}")
    return 10 - shift


def _low_count(m):
    # Nonzero grid points in [2^-32, 1/2]: 31 exponents of 2^m points each, plus 1/2 itself.
    return (_LOW_POINTS << m) + 1


def num_probability_codes(shift=0):
    """Number of grid points (histogram bins) of :func:`quantise_probability` with ``shift``."""
    n = _low_count(_mantissa_bits(shift))
    # 0, the n points in (0, 1/2], then 1 - g for the n - 1 points g < 1/2 and g = 0.
    return 2 * n + 1


def _floor_index(x, m):
    # x: float64 in [0, 1/2]. Index i >= 0 of the largest nonzero grid point <= x (-1 below 2^-32).
    x32 = x.astype(np.float32)
    x32 = np.where(x32.astype(np.float64) > x, np.nextafter(x32, np.float32(0)), x32)
    bits = x32.view(np.uint32).astype(np.int64) >> (_MANTISSA_BITS - m)
    return np.maximum(bits - (_MIN_EXPONENT << m), -1)


def _ceil_index(x, m):
    # x: float64 in [0, 1/2]. Index of the smallest nonzero grid point >= x (-1 for x == 0).
    x32 = x.astype(np.float32)
    x32 = np.where(x32.astype(np.float64) < x, np.nextafter(x32, np.float32(1)), x32)
    raw = x32.view(np.uint32).astype(np.int64)
    drop = _MANTISSA_BITS - m
    index = (raw >> drop) + ((raw & ((1 << drop) - 1)) != 0) - (_MIN_EXPONENT << m)
    return np.where(x32 == 0, -1, np.maximum(index, 0))


def _grid_point(index, m):
    # Nonzero grid point of index i (float64, exact).
    bits = ((np.asarray(index, dtype=np.int64) + (_MIN_EXPONENT << m)) << (_MANTISSA_BITS - m))
    return bits.astype(np.uint32).view(np.float32).astype(np.float64)


def quantise_probability(prob, shift=0):
    """Code of the largest grid point <= s (module docstring); codes increase with s.

    Parameters
    ----------
    prob : ndarray
        Scores in [0, 1] (float32 or float64); values outside are clipped.
    shift : int
        Mantissa bits dropped from the 10 of the default grid (0..9).

    Returns
    -------
    ndarray
        Codes in [0, num_probability_codes(shift)): uint16 for shift >= 0, else uint32.
    """
    m = _mantissa_bits(shift)
    n = _low_count(m)
    s = np.clip(np.asarray(prob, dtype=np.float64), 0.0, 1.0)
    low = s <= 0.5
    code = np.empty(s.shape, dtype=np.int64)
    code[low] = _floor_index(s[low], m) + 1
    # 1 - s is exact in float64 for s in [1/2, 1]; rounding it up rounds s down.
    rest = _ceil_index(1.0 - s[~low], m)
    code[~low] = 2 * n - 1 - rest
    return code.astype(code_dtype(shift))


def code_dtype(shift):
    """uint16 when the grid's codes fit in it (shift >= 0), else uint32."""
    return np.uint16 if num_probability_codes(shift) <= 1 << 16 else np.uint32


def coarsen_codes(code, fine_shift, coarse_shift):
    """Codes of the coarser grid ``coarse_shift`` of scores given by their ``fine_shift`` codes.

    Exact: every coarse grid point is a fine one, so the largest coarse point <= s is the largest
    coarse point <= the fine point of s. Integer arithmetic on the codes (no float round trip).
    """
    d = _mantissa_bits(fine_shift) - _mantissa_bits(coarse_shift)
    if d < 0:
        raise ValueError(f"grid shift {coarse_shift} is finer than {fine_shift}")
    code = np.asarray(code).astype(np.int64)
    n_fine, n_coarse = _low_count(_mantissa_bits(fine_shift)), _low_count(_mantissa_bits(coarse_shift))
    low = code <= n_fine
    # Low side: index i of a point >= 2^-32 is code - 1, and the coarse index is i >> d.
    out = np.where(code == 0, 0, ((code - 1) >> d) + 1)
    # High side: the index of the smallest point >= 1 - s; the coarse one is its ceiling / 2^d.
    rest = 2 * n_fine - 1 - code
    rest_coarse = np.where(rest < 0, -1, -((-rest) >> d))
    out = np.where(low, out, 2 * n_coarse - 1 - rest_coarse)
    return out.astype(code_dtype(coarse_shift))


def dequantise_probability(code, shift=0):
    """Grid point (float64, exact) of each code of :func:`quantise_probability`."""
    m = _mantissa_bits(shift)
    n = _low_count(m)
    code = np.asarray(code, dtype=np.int64)
    low = code <= n
    out = np.empty(code.shape, dtype=np.float64)
    out[low] = np.where(code[low] == 0, 0.0, _grid_point(np.maximum(code[low] - 1, 0), m))
    rest = 2 * n - 1 - code[~low]
    out[~low] = 1.0 - np.where(rest < 0, 0.0, _grid_point(np.maximum(rest, 0), m))
    return out

"""Reading images, label maps and list files, with errors that name the file and the problem.

Three label formats occur (SPEC section 2):

- GTA5: palette PNG whose palette INDICES are Cityscapes label ids. Converting it to RGB would
  return palette colours (and GTA5's palette differs from Cityscapes' colours), so the indices are
  read directly and an RGB label is rejected.
- Cityscapes ``*_gtFine_labelIds.png``: single-channel 8-bit label ids.
- SYNTHIA-RAND-CITYSCAPES: 16-bit 3-channel PNG, class id in the first (R) channel. Only OpenCV's
  IMREAD_UNCHANGED keeps all 16 bits; PIL silently reduces it to 8 bits, so it is never used here.
"""
import logging
import os
import struct

import cv2
import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG IHDR colour types -> (description, channels)
PNG_COLOR_TYPES = {0: ("grayscale", 1), 2: ("RGB", 3), 3: ("palette", 1), 4: ("grayscale+alpha", 2),
                   6: ("RGBA", 4)}


class DatasetError(ValueError):
    """A dataset folder, list file or file does not have the expected layout or format."""


def png_header(path):
    """Width, height, bit depth and colour type of a PNG, read from its IHDR chunk only.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    tuple of int
        ``(width, height, bit_depth, color_type)``; colour types as in ``PNG_COLOR_TYPES``.
    """
    with open(path, "rb") as f:
        head = f.read(33)
    if len(head) < 33 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise DatasetError(f"{path}: not a PNG file (no PNG signature / IHDR header)")
    width, height, bit_depth, color_type = struct.unpack(">IIBB", head[16:26])
    return width, height, bit_depth, color_type


def describe_png(path):
    """Human-readable format of a PNG, e.g. ``'16-bit RGB (3 channels)'``."""
    _, _, bit_depth, color_type = png_header(path)
    name, channels = PNG_COLOR_TYPES.get(color_type, (f"colour type {color_type}", 0))
    return f"{bit_depth}-bit {name} ({channels} channel{'s' if channels != 1 else ''})"


def _require_file(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"file not found: {path}")


_REPLACE_FILE = ("replace it with an intact copy (re-download or re-extract it) or leave it out of the "
                 "input (for a dataset: a --list-file without it)")


def _decode(path, flags, problem):
    """``cv2.imread(path, flags)``, or a DatasetError naming the file and ``problem``."""
    _require_file(path)
    # OpenCV decodes PNG a little faster than PIL and releases the GIL while doing it.
    array = cv2.imread(os.fspath(path), flags)
    if array is None:
        what = "empty file" if os.path.getsize(path) == 0 else problem
        raise DatasetError(f"{path}: {what}; {_REPLACE_FILE}")
    return array


def image_size(path):
    """(width, height) of an image file, from its header only.

    Raises
    ------
    DatasetError
        When the file is empty or not in an image format OpenCV/PIL decode.
    """
    _require_file(path)
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, SyntaxError, ValueError) as err:
        what = "empty file" if os.path.getsize(path) == 0 else f"not an image file ({err})"
        raise DatasetError(f"{path}: {what}; {_REPLACE_FILE}") from None


def read_image(path):
    """Read an 8-bit colour image.

    Returns uint8 (H, W, 3) RGB; a missing, empty or undecodable file is a :class:`DatasetError`.
    """
    bgr = _decode(path, cv2.IMREAD_COLOR, "cannot decode image (truncated or not an image)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_label_ids(path):
    """Read an 8-bit single-channel label map (palette indices or grayscale values).

    Used for GTA5 labels (palette PNG: the indices are the label ids, the palette is ignored) and
    Cityscapes ``labelIds``.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    numpy.ndarray
        uint8 (H, W) raw label ids.

    Raises
    ------
    DatasetError
        When the file is not a palette or 8-bit grayscale image (e.g. an RGB colour rendering of
        the labels, or a 16-bit SYNTHIA label), or cannot be decoded.
    """
    _require_file(path)
    try:
        with Image.open(path) as im:
            if im.format != "PNG":
                # JPEG and other lossy formats alter label ids at edges: never a label map.
                raise DatasetError(
                    f"{path}: label holds {im.format} data, not PNG; label maps must be the dataset's "
                    "original lossless PNG files (re-extract them)")
            if im.mode not in ("P", "L"):
                found = describe_png(path)
                raise DatasetError(
                    f"{path}: label has format {found} (PIL mode {im.mode}); expected an 8-bit "
                    "single-channel label map: palette (P) whose indices are the label ids, or "
                    "8-bit grayscale (L); colour-coded RGB labels are not accepted: use the "
                    "dataset's original label files (GTA5 labels/*.png, Cityscapes "
                    "*_gtFine_labelIds.png)")
            return np.array(im, dtype=np.uint8)
    except DatasetError:
        raise
    except (OSError, SyntaxError, ValueError) as err:
        what = "empty file" if os.path.getsize(path) == 0 else f"cannot decode label image ({err})"
        raise DatasetError(f"{path}: {what}; {_REPLACE_FILE}") from err


def read_label_synthia(path):
    """Read a SYNTHIA-RAND-CITYSCAPES label: class id from the first (R) channel of a 16-bit PNG.

    Returns the uint16 (H, W) SYNTHIA class ids. A file that is not 16-bit with 3 channels (the
    found dtype and channels are named) or cannot be decoded is a :class:`DatasetError`.
    """
    raw = _decode(path, cv2.IMREAD_UNCHANGED, "cannot decode label image (truncated?)")
    channels = 1 if raw.ndim == 2 else raw.shape[2]
    if raw.dtype != np.uint16 or channels != 3:
        raise DatasetError(
            f"{path}: SYNTHIA label has dtype {raw.dtype} with {channels} channel(s); expected "
            "uint16 with 3 channels (16-bit PNG, class id in the first channel); use the original "
            "GT/LABELS/*.png of SYNTHIA-RAND-CITYSCAPES (8-bit conversions lose the class ids)")
    # OpenCV returns BGR, so the first (R) channel of the file is index 2.
    return raw[:, :, 2]


def map_ids(raw_ids, lut):
    """Map raw label ids through a 256-entry uint8 look-up table; ids >= 256 become 255 (ignore)."""
    if raw_ids.dtype == np.uint8:
        return lut[raw_ids]
    return np.where(raw_ids < 256, lut[np.minimum(raw_ids, 255)], 255).astype(np.uint8)


def resize_pair(image, label, size, source=""):
    """Resize image (bilinear) and label (nearest) to ``size`` = (width, height) where they differ.

    Either may be None (then returned as None).

    Returns
    -------
    tuple
        ``(image, label)``; arrays already at ``size`` are returned unchanged.
    """
    width, height = size
    if image is not None and image.shape[:2] != (height, width):
        logger.warning("%s: image is %dx%d, resizing (bilinear) to %dx%d", source,
                       image.shape[1], image.shape[0], width, height)
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    if label is not None and label.shape[:2] != (height, width):
        logger.warning("%s: label is %dx%d, resizing (nearest) to %dx%d", source,
                       label.shape[1], label.shape[0], width, height)
        label = cv2.resize(label, (width, height), interpolation=cv2.INTER_NEAREST)
    return image, label


def read_list_file(path):
    """Parse a CBST-style list file.

    One entry per line: an image path, optionally followed (whitespace or tab separated) by a
    label path. Blank lines and lines starting with ``#`` are skipped.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    list of tuple
        ``(line_number, image_entry, label_entry or None)``.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"list file not found: {path}")
    entries = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            if len(fields) > 2:
                raise DatasetError(
                    f"{path}:{number}: expected 'image' or 'image label', got {line.strip()!r}")
            entries.append((number, fields[0], fields[1] if len(fields) == 2 else None))
    if not entries:
        raise DatasetError(f"list file {path} has no entries")
    return entries


def write_list_file(path, pairs):
    """Write a CBST-style list file: one ``image<TAB>label`` (or ``image``) per line.

    Parameters
    ----------
    path : str or os.PathLike
    pairs : iterable of tuple
        ``(image_relpath, label_relpath or None)``, paths relative to the dataset root.

    Returns
    -------
    int
        Number of lines written.
    """
    count = 0
    with open(path, "w", encoding="utf-8") as f:
        for image, label in pairs:
            f.write(image if label is None else f"{image}\t{label}")
            f.write("\n")
            count += 1
    return count

"""Training and evaluation transforms (SPEC section 2, paper Sec. 4.1.1).

Training crop: random scale in [0.7, 1.3] of the native size, a square crop of S pixels (image
padded with the mean colour, i.e. 0 after normalisation, label with 255), horizontal flip with
p = 0.5, normalisation, and the label subsampled at stride 8 from offset 4 (63 x 63 for S = 504),
which is the grid the stride-8 logits are compared with. Scale, crop and flip are one affine warp,
so only the S x S output is ever interpolated, never the rescaled full frame.
"""
import cv2
import numpy as np

from .classes import IGNORE_LABEL

MEAN = (0.485, 0.456, 0.406)  # RGB, of images scaled to [0, 1]
STD = (0.229, 0.224, 0.225)
LABEL_STRIDE = 8  # output stride of the network
LABEL_OFFSET = 4  # centre of the first stride-8 cell


def normalize(image, mean=MEAN, std=STD):
    """uint8 (H, W, 3) RGB -> float32 (3, H, W): (RGB / 255 - mean) / std.

    Parameters
    ----------
    image : numpy.ndarray
        uint8 (H, W, 3) RGB.
    mean, std : sequence of 3 float
        Per-channel statistics of images scaled to [0, 1].

    Returns
    -------
    numpy.ndarray
        float32 (3, H, W).
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    scale = (1.0 / (255.0 * np.asarray(std, np.float32))).astype(np.float32)
    bias = (-np.asarray(mean, np.float32) / np.asarray(std, np.float32)).astype(np.float32)
    out = image.astype(np.float32) * scale + bias
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def subsample_label(label, stride=LABEL_STRIDE, offset=LABEL_OFFSET):
    """Nearest subsampling of a label map at the centres of the stride-8 cells (the released code's
    loss grid): ``label[offset::stride, offset::stride]``."""
    return label[offset::stride, offset::stride]


def crop_start(length, crop, rng):
    """First row/column of a crop window of size ``crop`` along an axis of size ``length``,
    uniform over the valid range.

    When the axis is shorter than the crop the start is negative (the image lands at a random
    offset inside the padded window).
    """
    low, high = min(0, length - crop), max(0, length - crop)
    return int(rng.integers(low, high + 1))


def hard_class_window(label, crop, classes, priority, rng):
    """Native-pixel top-left corner of a released-code hard-class crop, or None.

    The rule of the released loader (engrjavediqbal/MLSL ``issegm/data.py`` L276-300): only
    pixels at least half a crop from the border can be centres, i.e. rows ``half <= y <= H - half
    - 2`` and columns alike with ``half = crop // 2`` (its window ``mlabel``, L281, whose end
    bound ``d0 + h - half - 1`` is exclusive; the image sits at offset ``d0`` of its padded
    frame). The classes present in that region decide: the ``priority`` ones present if any
    (L283-285), else the ``classes`` present (L287-288); one of them is drawn uniformly (L294-295),
    then one of its pixels in the region (L296-301). The crop is ``crop`` pixels with that pixel
    at index ``half`` (L320-323), so it lies inside the image. None (a uniform crop then) when
    no such class is present, which includes every image with a side of at most ``2 half + 1``
    pixels, as there the region is empty. (The released bound's floor ``max(1, label_stride,
    ...)`` only matters for crops under 16 pixels and is not reproduced.)

    Parameters
    ----------
    label : numpy.ndarray
        (H, W) native label map.
    crop : int
        Crop side in native pixels.
    classes, priority : tuple of int
        The released ``mine_id`` and ``mine_id_priority`` sets.
    rng : numpy.random.Generator

    Returns
    -------
    (int, int) or None
        ``(row, col)`` of the window's first pixel in the native label.
    """
    half = crop // 2
    height, width = label.shape
    region = label[half:max(half, height - half - 1), half:max(half, width - half - 1)]
    present = set(np.unique(region).tolist())
    candidates = [c for c in priority if c in present] or [c for c in classes if c in present]
    if not candidates:
        return None
    chosen = candidates[int(rng.integers(len(candidates)))]
    rows, cols = np.nonzero(region == chosen)
    pick = int(rng.integers(rows.size))
    # The region starts at (half, half), and the window at the pixel minus half: region indices.
    return int(rows[pick]), int(cols[pick])


class TrainTransform:
    """Random scale, square crop, horizontal flip and normalisation of one training sample.

    Parameters
    ----------
    crop_size : int
        S, a multiple of 8 (the paper's 500 rounded up to 504).
    scale_range : tuple of float
        Range of the uniform random scale relative to the native size.
    flip : bool
        Horizontal flip with probability 0.5.
    mean, std : sequence of 3 float
        Normalisation (SPEC section 2).
    hard_class : int or sequence of int, optional
        Released-code option (hard-class mining crops, off in the paper; the released
        ``mine_id``): with probability ``hard_class_prob`` the crop is centred on a pixel of a
        hard class, by :func:`hard_class_window` (a class drawn uniformly among the hard classes
        present away from the border, then one of its pixels).
    hard_class_priority : sequence of int, optional
        The released ``mine_id_priority``: hard classes drawn from first when any is present.
    hard_class_prob : float
        Released ``mine_port``, see ``hard_class`` (0.8 in the released command).
    return_full_label : bool
        Also return the full-resolution (S, S) uint8 crop label.

    Returns (when called with ``image, label, rng``)
    -----------------------------------------------
    ``(image float32 (3, S, S), label8 float32 (S/8, S/8))`` and, with ``return_full_label``,
    the uint8 (S, S) label as a third element. 255 marks ignored / padded pixels.
    """

    def __init__(self, crop_size=504, scale_range=(0.7, 1.3), flip=True, mean=MEAN, std=STD,
                 hard_class=None, hard_class_priority=None, hard_class_prob=0.8, return_full_label=False):
        if crop_size <= 0 or crop_size % LABEL_STRIDE:
            raise ValueError(f"crop_size must be a positive multiple of {LABEL_STRIDE}, got {crop_size}")
        if not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got {scale_range}")
        if not 0.0 <= hard_class_prob <= 1.0:
            raise ValueError(f"hard_class_prob must be in [0, 1], got {hard_class_prob}")
        self.crop_size = int(crop_size)
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.flip = flip
        self.mean, self.std = tuple(mean), tuple(std)
        self.hard_class = None if hard_class is None else tuple(int(c) for c in np.atleast_1d(hard_class))
        self.hard_class_priority = tuple(int(c) for c in np.atleast_1d(hard_class_priority or ()))
        self.hard_class_prob = float(hard_class_prob)
        self.return_full_label = return_full_label

    def _hard_class_start(self, label, scale, sy, sx, rng):
        """(y0, x0) of a hard-class crop in the rescaled frame, or None (then a uniform crop).

        With no hard classes no number is drawn, so the crop is then exactly the plain one.
        """
        if (self.hard_class is None and not self.hard_class_priority) or rng.random() >= self.hard_class_prob:
            return None
        # The released loader crops int(S / rate) native pixels and resizes them to S
        # (issegm/data.py L250, L332); here the rescaled frame is cropped instead, at the same place.
        corner = hard_class_window(label, int(self.crop_size / scale), self.hard_class or (),
                                   self.hard_class_priority, rng)
        if corner is None:
            return None
        return round(corner[0] * sy), round(corner[1] * sx)

    def __call__(self, image, label, rng):
        """Transform one (image uint8 (H, W, 3) RGB, label uint8 (H, W)) pair; see the class doc.

        ``rng`` (a ``numpy.random.Generator``) draws scale, crop and flip: the training set
        passes one per item, so an item's crop does not depend on which process loads it.
        """
        if label is None:
            raise ValueError("TrainTransform needs a label map (got None)")
        if image.shape[:2] != label.shape:
            raise ValueError(f"image {image.shape[:2]} and label {label.shape} sizes differ")
        size = self.crop_size
        height, width = label.shape
        scale = rng.uniform(*self.scale_range)
        scaled_h, scaled_w = max(1, round(height * scale)), max(1, round(width * scale))
        sy, sx = scaled_h / height, scaled_w / width

        start = self._hard_class_start(label, scale, sy, sx, rng)
        if start is None:
            start = crop_start(scaled_h, size, rng), crop_start(scaled_w, size, rng)
        y0, x0 = start
        flip = self.flip and rng.random() < 0.5

        # Pixel-centre convention of cv2.resize: dst = s * (src + 0.5) - 0.5, then shift by the crop.
        warp = np.array([[sx, 0.0, 0.5 * sx - 0.5 - x0],
                         [0.0, sy, 0.5 * sy - 0.5 - y0]], dtype=np.float64)
        crop_img = cv2.warpAffine(image, warp, (size, size), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REPLICATE)
        crop_label = cv2.warpAffine(label, warp, (size, size), flags=cv2.INTER_NEAREST,
                                    borderMode=cv2.BORDER_CONSTANT, borderValue=IGNORE_LABEL)
        img = normalize(crop_img, self.mean, self.std)
        # Outside the rescaled frame is padding: the mean colour, which is exactly 0 once normalised.
        rows = slice(max(0, -y0), min(size, scaled_h - y0))
        cols = slice(max(0, -x0), min(size, scaled_w - x0))
        valid = np.zeros((size, size), dtype=bool)
        valid[rows, cols] = True
        img[:, ~valid] = 0.0
        crop_label[~valid] = IGNORE_LABEL
        if flip:
            img = np.ascontiguousarray(img[:, :, ::-1])
            crop_label = np.ascontiguousarray(crop_label[:, ::-1])
        label8 = subsample_label(crop_label).astype(np.float32)
        if self.return_full_label:
            return img, label8, crop_label
        return img, label8


class EvalTransform:
    """Normalise an evaluation image at native resolution (optionally rescaled); the label stays
    at full native resolution.

    Parameters
    ----------
    scale : float
        Image rescaling factor (bilinear); 1.0 keeps the native size.
    mean, std : sequence of 3 float
        Normalisation (SPEC section 2).

    Returns (when called)
    ---------------------
    ``(image float32 (3, H', W'), label uint8 (H, W) or None)``.
    """

    def __init__(self, scale=1.0, mean=MEAN, std=STD):
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        self.scale = float(scale)
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, image, label=None):
        if self.scale != 1.0:
            height, width = image.shape[:2]
            size = (max(1, round(width * self.scale)), max(1, round(height * self.scale)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        if label is not None:
            label = np.asarray(label, dtype=np.uint8)
        return normalize(image, self.mean, self.std), label

"""Colour-coded predictions, overlays on the input image, and a class legend (Cityscapes palette)."""
import numpy as np
from PIL import Image, ImageDraw

# Pixels without a class (255, or any value outside the palette) are drawn black, like the
# Cityscapes "unlabeled" colour.
_NO_CLASS_COLOR = (0, 0, 0)


def colorize(pred, palette):
    """Map class indices to RGB colours.

    Parameters
    ----------
    pred : ndarray, shape (H, W), integer
        Class indices; values outside [0, len(palette)) are drawn black.
    palette : ndarray, shape (C, 3), uint8
        RGB colour per class (``mlsl_gluon.data.classes.palette(C)``).

    Returns
    -------
    ndarray, shape (H, W, 3), uint8
    """
    pred = np.asarray(pred)
    if pred.ndim != 2:
        raise ValueError(f"expected an (H, W) class map, got shape {pred.shape}")
    lut = np.array(list(palette) + [_NO_CLASS_COLOR], dtype=np.uint8)
    idx = pred.astype(np.int64)
    idx = np.where((idx < 0) | (idx >= len(palette)), len(palette), idx)
    return lut[idx]


def overlay(image, color, alpha=0.5):
    """Blend a colour-coded prediction onto the RGB image: ``(1 - alpha) * image + alpha * color``.

    Parameters
    ----------
    image, color : ndarray, shape (H, W, 3), uint8
    alpha : float in [0, 1]
        Weight of the prediction colours.
    """
    image = np.asarray(image)
    color = np.asarray(color)
    if image.shape != color.shape:
        raise ValueError(f"image shape {image.shape} != colour map shape {color.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    blend = (1.0 - alpha) * image.astype(np.float32) + alpha * color.astype(np.float32)
    return np.clip(np.round(blend), 0, 255).astype(np.uint8)


def legend(names, palette, swatch=20, width=200):
    """A legend image: one row per class, a colour swatch and the class name.

    Returns
    -------
    ndarray, shape (len(names) * swatch, width, 3), uint8
        Row i is filled with ``palette[i]`` over its first ``swatch`` columns.
    """
    if len(names) != len(palette):
        raise ValueError(f"{len(names)} class names for {len(palette)} colours")
    canvas = Image.new("RGB", (width, swatch * len(names)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, (name, rgb) in enumerate(zip(names, palette)):
        top = i * swatch
        draw.rectangle([0, top, swatch - 1, top + swatch - 1], fill=tuple(int(c) for c in rgb))
        draw.text((swatch + 6, top + swatch // 2 - 5), f"{i:2d} {name}", fill=(0, 0, 0))
    return np.asarray(canvas)

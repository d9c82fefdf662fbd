"""Builders of small dataset trees in the datasets' exact on-disk formats (used by test_data_*).

GTA5: RGB images + palette PNG labels whose indices are label ids (palette deliberately not the
Cityscapes colours). SYNTHIA: 8-bit RGB images + 16-bit 3-channel labels, class id in the first
(R) channel, instance id (> 255, so 8 bits cannot hold it) in the second. Cityscapes:
leftImg8bit/<split>/<city>/*_leftImg8bit.png + gtFine/<split>/<city>/*_gtFine_labelIds.png.
"""
import cv2
import numpy as np
from PIL import Image


def random_rgb(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def save_rgb(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image, mode="RGB").save(path)


def save_palette_label(path, ids):
    """Palette PNG whose indices are ``ids``; palette entry i is a colour unrelated to i."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(ids.astype(np.uint8), mode="P")
    rng = np.random.default_rng(123)
    im.putpalette(rng.integers(0, 256, size=768, dtype=np.uint8).tolist())
    im.save(path)


def save_gray_label(path, ids):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(ids.astype(np.uint8), mode="L").save(path)


def save_synthia_label(path, class_ids, instance_ids=None):
    """16-bit 3-channel PNG: R = class id, G = instance id, B = 0 (OpenCV writes BGR)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    bgr = np.zeros(class_ids.shape + (3,), dtype=np.uint16)
    bgr[:, :, 2] = class_ids
    bgr[:, :, 1] = 1000 if instance_ids is None else instance_ids
    assert cv2.imwrite(str(path), bgr)


def gta5_label_ids(height, width):
    """Cityscapes label ids: sky (23) on top, building (11) in the middle, road (7) at the bottom."""
    ids = np.full((height, width), 7, dtype=np.uint8)
    ids[: height // 3] = 23
    ids[height // 3: height // 2] = 11
    ids[height // 2: height // 2 + 2, : width // 4] = 0  # unlabelled -> ignore
    return ids


def make_gta5(root, count=3, size=(64, 40)):
    """GTA5 tree with ``count`` frames NNNNN.png of ``size`` = (width, height)."""
    width, height = size
    for i in range(1, count + 1):
        save_rgb(root / "images" / f"{i:05d}.png", random_rgb(height, width, seed=i))
        save_palette_label(root / "labels" / f"{i:05d}.png", gta5_label_ids(height, width))
    return root


def synthia_class_ids(height, width):
    """SYNTHIA ids: every id 0..22 in vertical stripes."""
    return (np.arange(width)[None, :].repeat(height, 0) * 23 // width).astype(np.uint16)


def make_synthia(root, count=2, size=(46, 30)):
    width, height = size
    for i in range(count):
        save_rgb(root / "RGB" / f"{i:07d}.png", random_rgb(height, width, seed=i))
        save_synthia_label(root / "GT" / "LABELS" / f"{i:07d}.png", synthia_class_ids(height, width))
    return root


def make_cityscapes(root, split="train", cities=("aachen", "bremen"), per_city=2, size=(64, 32),
                    labels=True):
    width, height = size
    for c, city in enumerate(cities):
        for k in range(per_city):
            stem = f"{city}_{k:06d}_000019"
            save_rgb(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
                     random_rgb(height, width, seed=10 * c + k))
            if labels:
                save_gray_label(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png",
                                gta5_label_ids(height, width))
    return root


def truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])

"""A seeded two-domain street-scene data set written in the real GTA5 / SYNTHIA / Cityscapes formats.

The source domain stands in for GTA5 (or SYNTHIA): a game engine's clean, saturated frames from
a low camera. The target stands in for Cityscapes: a car camera mounted higher (horizon higher in
the frame), with the car's bonnet at the bottom, duller colours, surface texture, uneven light,
blur and sensor noise, and more pedestrians and poles per frame. Every file goes through the
same readers as the real data sets; the target train split has no labels under the data root.

Layout on disk (the ``--data-root`` convention)::

    out_root/GTA5/{images,labels}/NNNNN.png
    out_root/SYNTHIA/RGB/NNNNNNN.png, out_root/SYNTHIA/GT/LABELS/NNNNNNN.png
    out_root/Cityscapes/leftImg8bit/{train,val}/<city>/<city>_000000_NNNNNN_leftImg8bit.png
    out_root/Cityscapes/gtFine/val/<city>/<city>_000000_NNNNNN_gtFine_labelIds.png

The target-train ground truth, which only the demo's measurements read (pseudo-label precision,
weak-label accuracy), goes to a separate folder given by the caller, never under ``out_root``::

    truth_root/<city>/<city>_000000_NNNNNN_gtFine_labelIds.png
"""
import logging
from pathlib import Path

import cv2
import numpy as np
from cityscapesscripts.helpers.labels import labels as _CS_LABELS
from PIL import Image
from tqdm import tqdm

from ..data.classes import LABEL_ID_TO_TRAIN_ID
from .render import SOURCE_LOOK, TARGET_LOOK, render
from .scene import Layout, draw_scene

logger = logging.getLogger(__name__)

SOURCE_LAYOUT = Layout(horizon=(0.40, 0.48), road_half_width=(0.35, 0.55), sidewalk_width=(0.25, 0.4),
                       building_height=(0.8, 2.0), cars=4.0, persons=1.5, poles=2.5, trees=1.5,
                       terrain_strip=0.3, ego_hood=False)
TARGET_LAYOUT = Layout(horizon=(0.30, 0.38), road_half_width=(0.3, 0.45), sidewalk_width=(0.3, 0.5),
                       building_height=(0.6, 1.6), cars=3.0, persons=3.5, poles=4.0, trees=2.5,
                       terrain_strip=0.5, ego_hood=True)

TRAIN_CITY, VAL_CITY = "demotown", "demoville"
# Independent random streams per (split, frame): a frame does not change with the split sizes.
_STREAMS = {"source": 1, "target_train": 2, "target_val": 3}

# Cityscapes label id -> palette colour, for the GTA5 palette PNGs (its index = label id).
_GTA5_PALETTE = np.zeros((256, 3), np.uint8)
for _lb in _CS_LABELS:
    if 0 <= _lb.id < 256:
        _GTA5_PALETTE[_lb.id] = _lb.color

# Cityscapes label id -> SYNTHIA-RAND-CITYSCAPES class id (0 = void), through the class name.
_SYNTHIA_IDS = {"sky": 1, "building": 2, "road": 3, "sidewalk": 4, "fence": 5, "vegetation": 6,
                "pole": 7, "car": 8, "traffic sign": 9, "person": 10, "bicycle": 11, "motorcycle": 12,
                "traffic light": 15, "terrain": 16, "rider": 17, "truck": 18, "bus": 19, "train": 20,
                "wall": 21}
LABEL_ID_TO_SYNTHIA_ID = np.zeros(256, np.uint16)
for _lb in _CS_LABELS:
    if 0 <= _lb.id < 256 and _lb.name in _SYNTHIA_IDS:
        LABEL_ID_TO_SYNTHIA_ID[_lb.id] = _SYNTHIA_IDS[_lb.name]


def make_frame(seed, stream, index, domain, size):
    """Draw and render one frame.

    Parameters
    ----------
    seed : int
        Data-set seed.
    stream : str
        ``'source'``, ``'target_train'`` or ``'target_val'``.
    index : int
        Frame index within the stream.
    domain : str
        ``'source'`` or ``'target'``: the layout and look to use.
    size : tuple of int
        (H, W) in pixels.

    Returns
    -------
    image : numpy.ndarray
        uint8 (H, W, 3) RGB.
    label_ids : numpy.ndarray
        uint8 (H, W) Cityscapes label ids.
    instances : numpy.ndarray
        int32 (H, W) region ids.
    """
    if domain not in ("source", "target"):
        raise ValueError(f"domain must be 'source' or 'target', got {domain!r}")
    rng = np.random.default_rng([int(seed), _STREAMS[stream], int(index)])
    layout, look = (SOURCE_LAYOUT, SOURCE_LOOK) if domain == "source" else (TARGET_LAYOUT, TARGET_LOOK)
    scene = draw_scene(rng, layout, *size)
    return render(rng, scene, look), scene.label_ids, scene.instances


def _write_rgb(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")


def _write_gta5_label(path, label_ids):
    """Palette PNG whose indices are Cityscapes label ids, coloured with the Cityscapes palette."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(label_ids, mode="P")
    img.putpalette(_GTA5_PALETTE.reshape(-1).tolist())
    img.save(path)


def _write_synthia_label(path, label_ids, instances):
    """16-bit 3-channel PNG: SYNTHIA class id in R, instance id in G (OpenCV writes BGR)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    bgr = np.zeros(label_ids.shape + (3,), np.uint16)
    bgr[..., 2] = LABEL_ID_TO_SYNTHIA_ID[label_ids]
    bgr[..., 1] = np.where(bgr[..., 2] > 0, instances, 0).astype(np.uint16)
    if not cv2.imwrite(str(path), bgr):
        raise OSError(f"could not write {path}")


def _write_label_ids(path, label_ids):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(label_ids, mode="L").save(path)


def generate_demo_data(out_root, *, seed=0, n_source=120, n_target_train=60, n_target_val=30,
                       size=(128, 256), source_format="gta5", truth_root=None, progress=True):
    """Write the demo's source and target data sets in the real on-disk formats.

    Parameters
    ----------
    out_root : str or Path
        Folder that receives ``GTA5/`` or ``SYNTHIA/`` and ``Cityscapes/``.
    seed : int
        Everything is a deterministic function of the seed: same seed, identical files.
    n_source, n_target_train, n_target_val : int
        Frames in the labeled source set, the unlabeled target train split and the labeled
        target val split.
    size : tuple of int
        (H, W) of every frame.
    source_format : str
        ``'gta5'`` (labels as Cityscapes label ids, 19 classes) or ``'synthia'``
        (SYNTHIA-RAND-CITYSCAPES class ids, 16-class setting).
    truth_root : str or Path, optional
        Folder that receives the target-train ground truth (Cityscapes label ids), for
        measurements only; it must not lie inside ``out_root``, the folder a run reads.
    progress : bool
        Show the generation progress bars (``--no-progress`` turns them off).

    Returns
    -------
    dict
        Data-set roots: ``{'gta5' or 'synthia': Path, 'cityscapes': Path}``, plus ``'truth'``
        when ``truth_root`` is given.
    """
    if source_format not in ("gta5", "synthia"):
        raise ValueError(f"source_format must be 'gta5' or 'synthia', got {source_format!r}")
    if min(n_source, n_target_train, n_target_val) < 1:
        raise ValueError("n_source, n_target_train and n_target_val must all be >= 1")
    height, width = (int(s) for s in size)
    if height < 32 or width < 32:
        raise ValueError(f"size must be at least 32x32, got {size}")
    out_root = Path(out_root)
    if truth_root is not None and _is_inside(Path(truth_root), out_root):
        raise ValueError(f"truth_root {truth_root} lies inside the data root {out_root}: a run reading "
                         f"the data root could see the target-train labels")
    src_root = out_root / ("GTA5" if source_format == "gta5" else "SYNTHIA")
    cs_root = out_root / "Cityscapes"

    for i in tqdm(range(n_source), desc=f"source ({source_format})", leave=False, disable=not progress):
        image, label_ids, instances = make_frame(seed, "source", i, "source", (height, width))
        if source_format == "gta5":
            _write_rgb(src_root / "images" / f"{i + 1:05d}.png", image)
            _write_gta5_label(src_root / "labels" / f"{i + 1:05d}.png", label_ids)
        else:
            _write_rgb(src_root / "RGB" / f"{i:07d}.png", image)
            _write_synthia_label(src_root / "GT" / "LABELS" / f"{i:07d}.png", label_ids, instances)

    for split, city, count in (("train", TRAIN_CITY, n_target_train), ("val", VAL_CITY, n_target_val)):
        for i in tqdm(range(count), desc=f"target {split}", leave=False, disable=not progress):
            image, label_ids, _ = make_frame(seed, f"target_{split}", i, "target", (height, width))
            stem = f"{city}_000000_{i:06d}"
            _write_rgb(cs_root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", image)
            if split == "val":
                _write_label_ids(cs_root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", label_ids)
            elif truth_root is not None:  # outside the data root: the adaptation never sees it
                _write_label_ids(Path(truth_root) / city / f"{stem}_gtFine_labelIds.png", label_ids)
    logger.info("demo data (seed %d): %d source, %d target train, %d target val frames of %dx%d in %s",
                seed, n_source, n_target_train, n_target_val, height, width, out_root)
    roots = {source_format: src_root, "cityscapes": cs_root}
    if truth_root is not None:
        roots["truth"] = Path(truth_root)
    return roots


def _is_inside(path, root):
    path, root = path.resolve(), root.resolve()
    return path == root or root in path.parents


def read_target_truth(truth_root, name, num_classes=19):
    """Train ids of one target-train frame from the truth folder (for measurements only).

    Parameters
    ----------
    truth_root : str or Path
        The ``truth_root`` given to :func:`generate_demo_data`.
    name : str
        The Cityscapes reader's item name, ``<city>/<city>_000000_NNNNNN``.
    num_classes : int
        19 (the GTA5 setting); the demo writes no 16-class truth.

    Returns
    -------
    numpy.ndarray
        uint8 (H, W) train ids, 255 = void.
    """
    if num_classes != 19:
        raise ValueError(f"the demo's target truth is in the 19-class setting, not {num_classes}")
    path = Path(truth_root) / f"{name}_gtFine_labelIds.png"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no ground truth for target frame {name!r}")
    return LABEL_ID_TO_TRAIN_ID[np.array(Image.open(path))]


def train_ids(label_ids):
    """Cityscapes label ids -> 19-class train ids (255 = ignore), the readers' mapping."""
    return LABEL_ID_TO_TRAIN_ID[label_ids]

"""Class tables: the one place that defines class names, id mappings and the mIoU* subset.

The Cityscapes label-id -> train-id table comes from cityscapesscripts (the dataset's own
scripts), not from a hand-written copy. GTA5 labels use Cityscapes label ids, so the same
table maps them. SYNTHIA-RAND-CITYSCAPES ids map to 16 classes (SPEC section 2).
"""
import numpy as np
from cityscapesscripts.helpers.labels import labels as _CS_LABELS

IGNORE_LABEL = 255

# 19 Cityscapes training classes in train-id order.
_TRAIN_LABELS = sorted((lb for lb in _CS_LABELS if 0 <= lb.trainId < 255), key=lambda lb: lb.trainId)
CITYSCAPES_19_NAMES = tuple(lb.name for lb in _TRAIN_LABELS)
CITYSCAPES_PALETTE = np.array([lb.color for lb in _TRAIN_LABELS], dtype=np.uint8)  # (19, 3) RGB


def _label_id_lut():
    lut = np.full(256, IGNORE_LABEL, dtype=np.uint8)
    for lb in _CS_LABELS:
        if 0 <= lb.id < 256 and 0 <= lb.trainId < 255:
            lut[lb.id] = lb.trainId
    return lut


# uint8 LUT: Cityscapes / GTA5 label id (0..255) -> 19-class train id, 255 = ignore.
LABEL_ID_TO_TRAIN_ID = _label_id_lut()

# The 16 classes shared by SYNTHIA and Cityscapes, in their 16-class train-id order.
SYNTHIA_16_NAMES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "sky", "person", "rider", "car", "bus", "motorcycle", "bicycle",
)
# SYNTHIA-RAND-CITYSCAPES class id -> 16-class train id (SPEC section 2).
_SYNTHIA_ID_TO_16 = {3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 1: 9, 10: 10,
                     17: 11, 8: 12, 19: 13, 12: 14, 11: 15}
SYNTHIA_ID_TO_TRAIN_ID = np.full(256, IGNORE_LABEL, dtype=np.uint8)
for _sid, _tid in _SYNTHIA_ID_TO_16.items():
    SYNTHIA_ID_TO_TRAIN_ID[_sid] = _tid

# 19-class train id -> 16-class train id (terrain, truck, train -> ignore); 256 entries so
# that 255 stays 255.
TRAIN19_TO_TRAIN16 = np.full(256, IGNORE_LABEL, dtype=np.uint8)
for _i, _name in enumerate(CITYSCAPES_19_NAMES):
    if _name in SYNTHIA_16_NAMES:
        TRAIN19_TO_TRAIN16[_i] = SYNTHIA_16_NAMES.index(_name)

# mIoU* (paper Table 2): the 13 of the 16 classes without wall, fence and pole.
MIOU13_CLASSES = tuple(i for i, n in enumerate(SYNTHIA_16_NAMES) if n not in ("wall", "fence", "pole"))
SYNTHIA_16_PALETTE = CITYSCAPES_PALETTE[[CITYSCAPES_19_NAMES.index(n) for n in SYNTHIA_16_NAMES]]


def class_names(num_classes):
    """Class names for a 19- (GTA5 setting) or 16-class (SYNTHIA setting) model."""
    if num_classes == 19:
        return CITYSCAPES_19_NAMES
    if num_classes == 16:
        return SYNTHIA_16_NAMES
    raise ValueError(f"num_classes must be 19 or 16, got {num_classes}")


def palette(num_classes):
    """(num_classes, 3) uint8 RGB colours, the Cityscapes palette for the named classes."""
    return CITYSCAPES_PALETTE if num_classes == 19 else SYNTHIA_16_PALETTE

"""Cityscapes reader: the target set (train, often without labels) and the evaluation set (val)."""
from pathlib import Path

import numpy as np

from . import classes
from .base import SegmentationDataset
from .common import DatasetError, map_ids, read_label_ids, read_list_file

# A list file may point at the train-id images that cityscapesscripts generates from the polygons
# (CBST's lists do); those already hold 19-class train ids.
_TRAIN_ID_SUFFIX = "_labelTrainIds.png"
_TRAIN19_IDENTITY = np.where(np.arange(256) < 19, np.arange(256), classes.IGNORE_LABEL).astype(np.uint8)


class Cityscapes(SegmentationDataset):
    """Cityscapes in its original layout, ``gtFine`` label ids mapped to 19 or 16 train ids.

    Parameters
    ----------
    root : str or os.PathLike
        Folder holding ``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` and optionally
        ``gtFine/<split>/<city>/*_gtFine_labelIds.png``.
    split : {'train', 'val'}
    num_classes : {19, 16}
        19: the standard train ids (``classes.LABEL_ID_TO_TRAIN_ID``, from cityscapesscripts);
        16: the classes shared with SYNTHIA (19-class ids through ``classes.TRAIN19_TO_TRAIN16``).
    list_file : str or os.PathLike, optional
        CBST-style list, e.g. the 505-image subset of train; one image per line, optionally with
        its label (``*_labelIds.png`` or ``*_labelTrainIds.png``).
    with_labels : bool or None
        None: read labels when ``gtFine/<split>`` exists or every list-file line names a label
        (the adaptation target set usually has none); True: labels required; False: never read
        labels (item label is None).

    Examples
    --------
    >>> ds = Cityscapes("/data/cityscapes", split="val")   # doctest: +SKIP
    >>> ds[0][2]                                            # doctest: +SKIP
    'frankfurt/frankfurt_000000_000294'
    """

    image_suffix = "_leftImg8bit.png"

    def __init__(self, root, split="train", num_classes=19, list_file=None, with_labels=None):
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
        if num_classes not in (19, 16):
            raise ValueError(f"num_classes must be 19 or 16, got {num_classes}")
        self.split = split
        self.num_classes = num_classes
        self.layout = (f"ROOT/leftImg8bit/{split}/<city>/<city>_<seq>_<frame>_leftImg8bit.png and, for "
                       f"labels, ROOT/gtFine/{split}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png")
        label_dir = self._label_dir(root)
        if with_labels is None:
            with_labels = label_dir.is_dir() or (
                list_file is not None and all(label for _, _, label in read_list_file(list_file)))
        elif with_labels and not label_dir.is_dir():
            raise DatasetError(f"labels requested but {label_dir} does not exist; expected layout: "
                               f"{self.layout}")
        self._label_lut = classes.LABEL_ID_TO_TRAIN_ID
        self._train_id_lut = _TRAIN19_IDENTITY
        if num_classes == 16:
            self._label_lut = classes.TRAIN19_TO_TRAIN16[self._label_lut]
            self._train_id_lut = classes.TRAIN19_TO_TRAIN16[self._train_id_lut]
        super().__init__(root, list_file=list_file, with_labels=with_labels)

    def _label_dir(self, root=None):
        return Path(self.root if root is None else root) / "gtFine" / self.split

    def _image_dir(self):
        return self.root / "leftImg8bit" / self.split

    def _default_label_path(self, name):
        return self._label_dir() / (name + "_gtFine_labelIds.png")

    def _read_label(self, path):
        lut = self._train_id_lut if str(path).endswith(_TRAIN_ID_SUFFIX) else self._label_lut
        return map_ids(read_label_ids(path), lut)

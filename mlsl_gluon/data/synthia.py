"""SYNTHIA-RAND-CITYSCAPES reader: the source set of SYNTHIA -> Cityscapes (16 classes)."""
from . import classes
from .base import SegmentationDataset
from .common import map_ids, read_label_synthia


class SYNTHIA(SegmentationDataset):
    """SYNTHIA-RAND-CITYSCAPES in its original layout, labels mapped to the 16 shared classes.

    Labels are 16-bit 3-channel PNGs with the class id in the first channel; they are read with
    OpenCV's IMREAD_UNCHANGED and mapped with ``classes.SYNTHIA_ID_TO_TRAIN_ID`` (ids outside the
    16 classes -> 255). A label in any other format is rejected.

    Parameters
    ----------
    root : str or os.PathLike
        Folder holding ``RGB/NNNNNNN.png`` and ``GT/LABELS/NNNNNNN.png``.
    list_file : str or os.PathLike, optional
        CBST-style list (``RGB/0000000.png<TAB>GT/LABELS/0000000.png`` per line).
    """

    layout = ("ROOT/RGB/NNNNNNN.png (8-bit RGB) and ROOT/GT/LABELS/NNNNNNN.png "
              "(16-bit 3-channel, class id in the first channel)")
    num_classes = 16

    def __init__(self, root, list_file=None):
        super().__init__(root, list_file=list_file, with_labels=True)

    def _image_dir(self):
        return self.root / "RGB"

    def _default_label_path(self, name):
        return self.root / "GT" / "LABELS" / (name + ".png")

    def _read_label(self, path):
        return map_ids(read_label_synthia(path), classes.SYNTHIA_ID_TO_TRAIN_ID)

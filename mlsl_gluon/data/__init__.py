"""Dataset readers, label tables and training/evaluation transforms."""
from . import classes
from .base import SampleFiles, SegmentationDataset, TransformedDataset
from .cityscapes import Cityscapes
from .common import DatasetError, read_image, read_label_ids, read_label_synthia, read_list_file
from .gta5 import GTA5, GTA5_SIZE
from .synthia import SYNTHIA
from .transforms import MEAN, STD, EvalTransform, TrainTransform, normalize, subsample_label

__all__ = [
    "classes", "SampleFiles", "SegmentationDataset", "TransformedDataset", "Cityscapes", "GTA5",
    "GTA5_SIZE", "SYNTHIA", "DatasetError", "read_image", "read_label_ids", "read_label_synthia",
    "read_list_file", "MEAN", "STD", "EvalTransform", "TrainTransform", "normalize", "subsample_label",
]

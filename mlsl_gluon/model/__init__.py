"""The ResNet-38 MLSL network, its weight files and its export (paper Sec. 4.1.2)."""
from .heads import ClassificationBranch, SegmentationHead
from .mlsl_net import MLSLNet, default_initializer, init_params
from .resnet38 import BN_EPS, ResNet38, scaled_channels

__all__ = [
    "BN_EPS",
    "ClassificationBranch",
    "MLSLNet",
    "ResNet38",
    "SegmentationHead",
    "default_initializer",
    "init_params",
    "scaled_channels",
]

"""The ResNet-38 MLSL network, its weight files and its export (paper Sec. 4.1.2).

Typical use::

    net = MLSLNet(num_classes=19)
    init_params(net, ctx=[mx.cpu()])
    load_ademxapp_params(net, "gta_rna-a1_cls19_s8_ep-0000.params")
"""
from .export import export_onnx, export_symbol
from .heads import CLS_HEAD_VARIANTS, ClassificationBranch, SegmentationHead
from .mlsl_net import MLSLNet, default_initializer, init_params
from .resnet38 import BN_EPS, OUTPUT_STRIDE, ResNet38, scaled_channels
from .weight_files import (
    FORMATS,
    WeightsError,
    WeightsInfo,
    build_network_from_weights,
    inspect_weights,
    load_network_weights,
)
from .weights import (
    ademxapp_param_map,
    load_ademxapp_params,
    load_weights,
    save_ademxapp_params,
    save_weights,
)

__all__ = [
    "BN_EPS",
    "FORMATS",
    "CLS_HEAD_VARIANTS",
    "OUTPUT_STRIDE",
    "ClassificationBranch",
    "MLSLNet",
    "ResNet38",
    "SegmentationHead",
    "WeightsError",
    "WeightsInfo",
    "ademxapp_param_map",
    "build_network_from_weights",
    "default_initializer",
    "export_onnx",
    "export_symbol",
    "init_params",
    "inspect_weights",
    "load_ademxapp_params",
    "load_network_weights",
    "load_weights",
    "save_ademxapp_params",
    "save_weights",
    "scaled_channels",
]

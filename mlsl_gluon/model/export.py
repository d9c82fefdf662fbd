"""Export MLSLNet for deployment: MXNet symbol JSON + params, and ONNX.

The exported graphs are inference graphs (dropout off, BN on its running statistics). By
default only the trunk and the segmentation head are exported (output ``seg_logits``): the
classification branch only serves the PWL training loss. ``include_classifier=True`` exports
``net(x)`` itself, with ``cls_logits`` as a second output when the network has the branch.
"""
import logging
import tempfile
from pathlib import Path

import mxnet as mx
import numpy as np
from mxnet.gluon.block import HybridBlock

logger = logging.getLogger(__name__)


def _first_ctx(net):
    return next(iter(net.collect_params().values())).list_ctx()[0]


class _Segmenter(HybridBlock):
    """The trunk and the segmentation head of an MLSLNet, sharing its parameters (and names)."""

    def __init__(self, net, **kwargs):
        super().__init__(prefix=net.prefix, **kwargs)
        self.trunk = net.trunk
        self.seg_head = net.seg_head

    def hybrid_forward(self, F, x):
        return self.seg_head(self.trunk(x))


def inference_block(net, include_classifier=False):
    """The block to export: ``net`` itself, or its trunk + segmentation head only.

    Blocks without a ``seg_head`` and ``trunk`` (not an MLSLNet) are returned unchanged.
    """
    if include_classifier or not (hasattr(net, "trunk") and hasattr(net, "seg_head")):
        return net
    return _Segmenter(net)


def export_symbol(net, prefix, input_shape=(1, 3, 64, 64), epoch=0, include_classifier=False):
    """Write ``<prefix>-symbol.json`` and ``<prefix>-<epoch:04d>.params``.

    Parameters
    ----------
    net : HybridBlock
        Initialised network; the exported block is hybridized by this call (needed to trace
        the graph).
    prefix : str or Path
        Output path prefix; parent folders are created.
    input_shape : tuple of int
        Shape of the dummy batch used to trace the graph. The symbol itself works for any
        input size.
    epoch : int
        Number in the params file name (MXNet convention).
    include_classifier : bool
        Export ``net(x)`` with the classification branch's output too; by default only the
        segmentation logits (the branch's parameters are then not written either).

    Returns
    -------
    tuple of Path
        ``(symbol_file, params_file)``; load back with
        ``gluon.SymbolBlock.imports(symbol_file, ['data'], params_file, ctx=...)``.
    """
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    block = inference_block(net, include_classifier)
    block.hybridize()
    with mx.autograd.pause(train_mode=False):
        block(mx.nd.zeros(input_shape, ctx=_first_ctx(block)))
    block.export(str(prefix), epoch=epoch)
    symbol_file = Path("{}-symbol.json".format(prefix))
    params_file = Path("{}-{:04d}.params".format(prefix, epoch))
    logger.info("exported %s and %s", symbol_file, params_file)
    return symbol_file, params_file


def export_onnx(net, path, input_shape=(1, 3, 256, 256), include_classifier=False):
    """Export the inference graph of ``net`` to an ONNX file with a fixed input shape.

    Uses MXNet's own exporter (``mxnet.onnx``, needs onnx < 1.19). Input name ``data``.

    Parameters
    ----------
    net : HybridBlock
        Initialised network (hybridized by this call).
    path : str or Path
        The ``.onnx`` file to write.
    input_shape : tuple of int
        (N, 3, H, W) of the exported model's input.
    include_classifier : bool
        As in :func:`export_symbol`.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        symbol_file, params_file = export_symbol(net, Path(tmp) / "model", input_shape,
                                                 include_classifier=include_classifier)
        mx.onnx.export_model(str(symbol_file), str(params_file), in_shapes=[tuple(input_shape)],
                             in_types=[np.float32], onnx_file_path=str(path))
    logger.info("exported ONNX model %s (input %s)", path, tuple(input_shape))
    return path

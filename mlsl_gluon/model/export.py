"""Export MLSLNet for deployment: MXNet symbol JSON + params, and ONNX.

The exported graphs are the inference graph of ``net(x)`` (dropout off, BN on its running
statistics): outputs ``seg_logits`` and, with the classifier, ``cls_logits``.
"""
import logging
import tempfile
from pathlib import Path

import mxnet as mx
import numpy as np

logger = logging.getLogger(__name__)


def _first_ctx(net):
    return next(iter(net.collect_params().values())).list_ctx()[0]


def export_symbol(net, prefix, input_shape=(1, 3, 64, 64), epoch=0):
    """Write ``<prefix>-symbol.json`` and ``<prefix>-<epoch:04d>.params``.

    Parameters
    ----------
    net : HybridBlock
        Initialised network; it is hybridized by this call (needed to trace the graph).
    prefix : str or Path
        Output path prefix; parent folders are created.
    input_shape : tuple of int
        Shape of the dummy batch used to trace the graph. The symbol itself works for any
        input size.
    epoch : int
        Number in the params file name (MXNet convention).

    Returns
    -------
    tuple of Path
        ``(symbol_file, params_file)``; load back with
        ``gluon.SymbolBlock.imports(symbol_file, ['data'], params_file, ctx=...)``.
    """
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    net.hybridize()
    with mx.autograd.pause(train_mode=False):
        net(mx.nd.zeros(input_shape, ctx=_first_ctx(net)))
    net.export(str(prefix), epoch=epoch)
    symbol_file = Path("{}-symbol.json".format(prefix))
    params_file = Path("{}-{:04d}.params".format(prefix, epoch))
    logger.info("exported %s and %s", symbol_file, params_file)
    return symbol_file, params_file


def export_onnx(net, path, input_shape=(1, 3, 256, 256)):
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

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        symbol_file, params_file = export_symbol(net, Path(tmp) / "model", input_shape)
        mx.onnx.export_model(str(symbol_file), str(params_file), in_shapes=[tuple(input_shape)],
                             in_types=[np.float32], onnx_file_path=str(path))
    logger.info("exported ONNX model %s (input %s)", path, tuple(input_shape))
    return path

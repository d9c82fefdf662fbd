"""Helpers shared by CLI commands: device lists and weight files."""
import logging

import mxnet as mx

logger = logging.getLogger(__name__)


def parse_ctx(spec):
    """Parse a device specification into a list of MXNet contexts.

    Parameters
    ----------
    spec : str
        ``"cpu"``, ``"gpu"`` (device 0), or ``"<cpu|gpu>:<i>[,<j>...]"``, e.g. ``"gpu:0,1"``.

    Returns
    -------
    list of mx.Context
        ``parse_ctx("cpu") -> [mx.cpu()]``, ``parse_ctx("gpu:0,1") -> [mx.gpu(0), mx.gpu(1)]``.

    Raises
    ------
    ValueError
        On an unknown device type, an empty or non-integer id list, or a duplicated id.
    """
    text = str(spec).strip().lower()
    kind, _, ids = text.partition(":")
    kind = kind.strip()
    if kind not in ("cpu", "gpu"):
        raise ValueError(f"bad device spec {spec!r}: expected 'cpu', 'gpu', 'cpu:0,1' or 'gpu:0,1'")
    make = mx.cpu if kind == "cpu" else mx.gpu
    if not _:
        return [make(0)]
    try:
        indices = [int(tok) for tok in ids.split(",")]
    except ValueError:
        raise ValueError(f"bad device spec {spec!r}: device ids must be integers, e.g. 'gpu:0,1'") from None
    if any(i < 0 for i in indices):
        raise ValueError(f"bad device spec {spec!r}: device ids must be >= 0")
    if len(set(indices)) != len(indices):
        raise ValueError(f"bad device spec {spec!r}: duplicated device id")
    return [make(i) for i in indices]

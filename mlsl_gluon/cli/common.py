"""Helpers shared by CLI commands: device lists, weight files of any supported format, and
input checks whose errors say what to obtain and where to put it."""
import logging
from pathlib import Path

import click
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


def parse_scales(spec):
    """``"0.75,1.0,1.25"`` -> ``(0.75, 1.0, 1.25)``; every scale must be a positive number."""
    try:
        scales = tuple(float(tok) for tok in str(spec).split(","))
    except ValueError:
        raise ValueError(f"bad scales {spec!r}: expected comma-separated numbers, e.g. 0.75,1.0") from None
    if any(s <= 0 for s in scales):
        raise ValueError(f"bad scales {spec!r}: every scale must be > 0")
    return scales


# ---- weight files ---------------------------------------------------------------------------

WEIGHTS_HELP = (
    "Obtain one of these and pass its path with --weights:\n"
    "  - gta_rna-a1_cls19_s8_ep-0000.params: ResNet-38 trained on GTA5 (19 classes), the CBST\n"
    "    source model (ademxapp format, released with CBST, github.com/yzou2/CBST);\n"
    "  - synthia_rna-a1_cls16_s8_ep-0000.params: ResNet-38 trained on SYNTHIA (16 classes), same source;\n"
    "  - an MLSL-PWL model saved by the authors' code (github.com/engrjavediqbal/MLSL, 203 keys);\n"
    "  - a model trained by this package: RUN/checkpoints/latest.params or round_NN.params\n"
    "    from `mlsl-gluon train`, RUN/final.params (mlsl_gluon.model.save_weights), or the\n"
    "    <prefix>-0000.params of `mlsl-gluon export --format symbol`.\n"
    "For example put it at weights/gta_rna-a1_cls19_s8_ep-0000.params and pass\n"
    "--weights weights/gta_rna-a1_cls19_s8_ep-0000.params."
)

def check_weights_file(path):
    """``Path(path)`` if it is a file, else a click.ClickException saying what to obtain."""
    path = Path(path)
    if not path.is_file():
        raise click.ClickException(f"weights file not found: {path}\n{WEIGHTS_HELP}")
    return path


def load_segmentation_network(path, ctx, num_classes=None, width=None):
    """Build an MLSLNet (segmentation output only) from any supported weights file.

    Parameters
    ----------
    path : str or Path
        Any format of :mod:`mlsl_gluon.model.weight_files` but the ImageNet model; a stored
        classification branch is not loaded.
    ctx : list of mx.Context
        Devices that receive a copy of the parameters.
    num_classes, width : optional
        Checked against the file; default: read from the file (classifier rows; conv1a
        channels / 64).

    Returns
    -------
    net : MLSLNet
        ``with_classifier=False``, hybridized, parameters on every context.
    info : dict
        ``format``, ``num_classes``, ``width`` of the loaded file.

    Raises
    ------
    click.ClickException
        With what to obtain and where, if the file is missing; naming the file and the problem
        if it does not match.
    """
    from ..model.weight_files import WeightsError, build_network_from_weights

    path = check_weights_file(path)
    try:
        net, found = build_network_from_weights(path, ctx, num_classes, width)
    except WeightsError as err:
        raise click.ClickException(f"{err}\n{WEIGHTS_HELP}") from None
    net.hybridize()
    return net, {"format": found.format, "num_classes": found.num_classes, "width": net.width}


# ---- datasets -------------------------------------------------------------------------------

def cityscapes_help(root, split):
    """What to download for Cityscapes and where to put it."""
    return (
        f"Cityscapes is expected under {root}:\n"
        f"  {root}/leftImg8bit/{split}/<city>/<city>_<seq>_<frame>_leftImg8bit.png\n"
        f"  {root}/gtFine/{split}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png\n"
        "Download leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip from "
        "https://www.cityscapes-dataset.com/downloads/ (free registration) and unzip both into "
        f"{root} (the val split has 500 images in 3 cities: frankfurt, lindau, munster)."
    )


def open_cityscapes(root, split, num_classes, list_file=None, with_labels=True):
    """``mlsl_gluon.data.Cityscapes``, or a click.ClickException saying what to obtain."""
    from ..data import Cityscapes, DatasetError

    root = Path(root)
    if not root.is_dir():
        raise click.ClickException(f"data root not found: {root}\n{cityscapes_help(root, split)}")
    try:
        return Cityscapes(root, split=split, num_classes=num_classes, list_file=list_file,
                          with_labels=with_labels)
    except DatasetError as err:
        raise click.ClickException(f"{err}\n{cityscapes_help(root, split)}") from None

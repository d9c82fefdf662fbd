"""Helpers shared by CLI commands: device lists, weight files of any supported format, and
input checks whose errors say what to obtain and where to put it."""
import logging
import re
import tempfile
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
    "  - a model trained by this package: RUN/checkpoints/latest.params or round_NN.params\n"
    "    from `mlsl-gluon train`, or a file written by mlsl_gluon.model.save_weights.\n"
    "For example put it at weights/gta_rna-a1_cls19_s8_ep-0000.params and pass\n"
    "--weights weights/gta_rna-a1_cls19_s8_ep-0000.params."
)

_ADEMXAPP_CLASSIFIER = re.compile(r"^arg:linear(\d+)_weight$")
_GLUON_CLASSIFIER = "seg_head.linear.weight"
_GLUON_STEM = "trunk.conv1a.weight"
_GLUON_CLS_BRANCH = "cls_branch."
_STEM_CHANNELS = 64  # conv1a of ResNet-38 at width 1


def _read_params(path, scratch):
    """Name -> NDArray dict of any supported weight file, and its format.

    Formats: ``'ademxapp'`` (``arg:``/``aux:`` keys), ``'gluon'`` (``save_parameters`` names)
    and ``'checkpoint'`` (a training checkpoint, whose params section is unpacked into
    ``scratch``). Raises click.ClickException naming the file on anything else.
    """
    from ..training.checkpoint import MAGIC, CheckpointError, read_checkpoint

    with open(path, "rb") as handle:
        head = handle.read(len(MAGIC))
    fmt = "gluon"
    source = path
    if head == MAGIC:
        try:
            _, sections = read_checkpoint(path)
        except CheckpointError as err:
            raise click.ClickException(str(err)) from None
        source = Path(scratch) / "checkpoint_params.params"
        source.write_bytes(sections["params"])
        fmt = "checkpoint"
    try:
        params = mx.nd.load(str(source))
    except mx.base.MXNetError as err:
        first = str(err).strip().splitlines()[0]
        raise click.ClickException(
            f"{path}: not an MXNet .params weight file ({first})\n{WEIGHTS_HELP}") from None
    if not isinstance(params, dict) or not params:
        raise click.ClickException(f"{path}: holds no named arrays; not a weight file\n{WEIGHTS_HELP}")
    if all(k.startswith(("arg:", "aux:")) for k in params):
        fmt = "ademxapp"
    return params, fmt


def _architecture(path, params, fmt):
    """(num_classes, width) of the segmentation network stored in ``params``."""
    if fmt == "ademxapp":
        classes = [int(m.group(1)) for k in params for m in [_ADEMXAPP_CLASSIFIER.match(k)] if m]
        stem = params.get("arg:conv1a_weight")
        if classes == [1000]:
            raise click.ClickException(
                f"{path}: this is the ImageNet classification model (linear1000), not a segmentation "
                f"model; it is only a starting point for `mlsl-gluon train`.\n{WEIGHTS_HELP}")
        if len(classes) != 1 or stem is None:
            raise click.ClickException(
                f"{path}: ademxapp-style file without exactly one 'arg:linear<C>_weight' "
                f"segmentation classifier and 'arg:conv1a_weight'\n{WEIGHTS_HELP}")
        return classes[0], stem.shape[0] / _STEM_CHANNELS
    if _GLUON_CLASSIFIER not in params or _GLUON_STEM not in params:
        raise click.ClickException(
            f"{path}: no '{_GLUON_CLASSIFIER}' / '{_GLUON_STEM}' entries; not an MLSLNet weight "
            f"file\n{WEIGHTS_HELP}")
    return params[_GLUON_CLASSIFIER].shape[0], params[_GLUON_STEM].shape[0] / _STEM_CHANNELS


def check_weights_file(path):
    """``Path(path)`` if it is a file, else a click.ClickException saying what to obtain."""
    path = Path(path)
    if not path.is_file():
        raise click.ClickException(f"weights file not found: {path}\n{WEIGHTS_HELP}")
    return path


def load_segmentation_network(path, ctx, num_classes=None, width=None):
    """Build an MLSLNet (segmentation output only) from any supported weight file.

    Parameters
    ----------
    path : str or Path
        ademxapp/CBST ``.params`` (``arg:``/``aux:`` keys), our ``save_weights`` file, or a
        training checkpoint; the classification branch, if stored, is not loaded.
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
    from ..model import MLSLNet, init_params, load_ademxapp_params, load_weights

    path = check_weights_file(path)
    with tempfile.TemporaryDirectory(prefix="mlsl-weights-") as scratch:
        params, fmt = _read_params(path, scratch)
        file_classes, file_width = _architecture(path, params, fmt)
        if num_classes is not None and num_classes != file_classes:
            raise click.ClickException(
                f"{path}: holds a {file_classes}-class model but --num-classes is {num_classes}")
        width = file_width if width is None else width
        net = MLSLNet(num_classes=file_classes, width=width, with_classifier=False)
        init_params(net, ctx=ctx)
        try:
            if fmt == "ademxapp":
                load_ademxapp_params(net, path)
            else:
                # The classification branch is training-only; drop it so the segmentation-only
                # network loads the file strictly (every other key must match).
                seg_only = {k: v for k, v in params.items() if not k.startswith(_GLUON_CLS_BRANCH)}
                staged = Path(scratch) / "segmentation.params"
                mx.nd.save(str(staged), seg_only)
                load_weights(net, staged, ctx=ctx)
        except ValueError as err:
            message = str(err).replace(str(Path(scratch) / "segmentation.params"), str(path))
            raise click.ClickException(
                f"{message}\n(network built with num_classes={file_classes}, width={width:g}; "
                f"the file's conv1a suggests --width {file_width:g})") from None
    net.hybridize()
    logger.info("loaded %s (%s format, %d classes, width %g)", path, fmt, file_classes, width)
    return net, {"format": fmt, "num_classes": file_classes, "width": width}


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

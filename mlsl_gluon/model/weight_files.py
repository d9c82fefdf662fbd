"""What a weights file is, and the one loader that train, evaluate, predict, export and
``tools/convert_weights.py`` use for every format.

Formats (:data:`FORMATS`), told apart by their keys, never by the file name:

- ``ademxapp-imagenet``: the ademxapp ImageNet model (trunk + ``linear1000``), a start for
  source-only training only;
- ``ademxapp-cbst``: an ademxapp/CBST segmentation model (195 keys, ``linear<C>``);
- ``ademxapp-mlsl``: the authors' MLSL-PWL checkpoint (203 keys: also the classification branch);
- ``gluon``: our ``save_weights`` file (Gluon structured names);
- ``checkpoint``: our training checkpoint (``RUN/checkpoints/*.params``), its ``params`` section;
- ``symbol``: the params half of an exported symbol + params pair (``export_symbol``).
"""
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import mxnet as mx

from .mlsl_net import MLSLNet, init_params
from .resnet38 import CONV1_CHANNELS
from .weights import RELEASED_BRANCH, assign_ademxapp_arrays, assign_gluon_arrays, read_param_dict

logger = logging.getLogger(__name__)

FORMATS = ("ademxapp-imagenet", "ademxapp-cbst", "ademxapp-mlsl", "gluon", "checkpoint", "symbol")
_ADEMXAPP_CLASSIFIER = re.compile(r"^arg:linear(\d+)_weight$")
_IMAGENET_CLASSES = 1000
# Exported params are named after the Gluon parameter names: arg:<net prefix>trunk_conv1a_weight.
_SYMBOL_STEM = re.compile(r"^arg:(.*)trunk_conv1a_weight$")
_GLUON_STEM = "trunk.conv1a.weight"
_GLUON_CLASSIFIER = "seg_head.linear.weight"
_GLUON_BRANCH = "cls_branch."


class WeightsError(ValueError):
    """A weights file that is missing, unreadable, of no known format, or does not fit."""


@dataclass(frozen=True)
class WeightsInfo:
    """What :func:`inspect_weights` found in a file.

    ``num_classes`` is None for the ImageNet model; ``width`` is conv1a's channels / 64 (None
    for an ademxapp file without conv1a);
    ``has_classifier`` says whether the classification branch (PWL) is stored.
    """

    path: Path
    format: str  # one of FORMATS
    num_classes: Optional[int]
    width: Optional[float]
    has_classifier: bool

    @property
    def segmentation(self):
        """True when the file holds a segmentation head (every format but the ImageNet model)."""
        return self.format != "ademxapp-imagenet"

    @property
    def kind(self):
        """``'imagenet'``, ``'source'`` (an ademxapp/CBST/MLSL model) or ``'gluon'`` (ours)."""
        if self.format == "ademxapp-imagenet":
            return "imagenet"
        return "source" if self.format.startswith("ademxapp") else "gluon"


def _checkpoint_arrays(path):
    # Imported here: checkpoints belong to training, which imports this package.
    from ..training.checkpoint import MAGIC, CheckpointError, read_checkpoint

    with open(path, "rb") as handle:
        if handle.read(len(MAGIC)) != MAGIC:
            return None
    try:
        _, sections = read_checkpoint(path)
    except CheckpointError as err:
        raise WeightsError(str(err)) from None
    return mx.nd.load_frombuffer(sections["params"])


def _read(path):
    """``(format, {name: NDArray})``; exported params come back under their Gluon parameter
    names without the exporting net's prefix (:func:`_by_name` maps them onto a network)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError("weights file not found: {}".format(path))
    arrays = _checkpoint_arrays(path)
    if arrays is not None:
        return "checkpoint", arrays
    try:
        _, arrays = read_param_dict(path)
    except ValueError as err:
        raise WeightsError(str(err)) from None
    if not arrays:
        raise WeightsError("{}: holds no named arrays; not a weights file".format(path))
    if not all(k.startswith(("arg:", "aux:")) for k in arrays):
        return "gluon", arrays
    stems = [m.group(1) for m in map(_SYMBOL_STEM.match, arrays) if m]
    if len(stems) == 1:
        return "symbol", {_without_export_prefix(k, stems[0]): v for k, v in arrays.items()}
    classes = [int(m.group(1)) for m in map(_ADEMXAPP_CLASSIFIER.match, arrays) if m]
    if classes == [_IMAGENET_CLASSES] or not classes:
        return "ademxapp-imagenet", arrays
    if any(RELEASED_BRANCH.match(k) for k in arrays):
        return "ademxapp-mlsl", arrays
    return "ademxapp-cbst", arrays


def _without_export_prefix(key, prefix):
    """``aux:mlslnet0_trunk_bn7_running_var`` -> ``trunk_bn7_running_var``: the Gluon name
    without the exporting net's own prefix, which depends on how many nets that process made."""
    name = key.partition(":")[2]
    return name[len(prefix):] if name.startswith(prefix) else key


def _by_name(net, arrays):
    """Exported arrays (Gluon names without the net prefix) under ``net``'s structured names."""
    names = {p.name[len(net.prefix):]: key for key, p in net._collect_params_with_prefix().items()}
    return {names.get(k, k): v for k, v in arrays.items()}


def _architecture(path, fmt, arrays):
    """(num_classes, width, has_classifier) of a file's network."""
    if fmt.startswith("ademxapp"):
        stem = arrays.get("arg:conv1a_weight")
        classes = [int(m.group(1)) for m in map(_ADEMXAPP_CLASSIFIER.match, arrays) if m]
        classes = [c for c in classes if c != _IMAGENET_CLASSES]
        if len(classes) > 1:
            raise WeightsError("{}: ademxapp-style file with several 'arg:linear<C>_weight' "
                               "classifiers ({})".format(path, classes))
        # Without conv1a the width is unknown; loading then names the missing keys.
        return (classes[0] if classes else None,
                None if stem is None else stem.shape[0] / CONV1_CHANNELS, fmt == "ademxapp-mlsl")
    stem_key = "trunk_conv1a_weight" if fmt == "symbol" else _GLUON_STEM
    classifier = [k for k in arrays if re.match(r"^seg_linear\d+_weight$", k)] if fmt == "symbol" \
        else [_GLUON_CLASSIFIER]
    branch = "cls_" if fmt == "symbol" else _GLUON_BRANCH
    if stem_key not in arrays or len(classifier) != 1 or classifier[0] not in arrays:
        raise WeightsError("{}: no '{}' / segmentation classifier entries; not an MLSLNet weights "
                           "file".format(path, stem_key))
    return (arrays[classifier[0]].shape[0], arrays[stem_key].shape[0] / CONV1_CHANNELS,
            any(k.startswith(branch) for k in arrays))


def inspect_weights(path):
    """Say what a weights file is, from its keys.

    Parameters
    ----------
    path : str or Path
        Any file of :data:`FORMATS`.

    Returns
    -------
    WeightsInfo
        Format, number of classes (None for the ImageNet model), width multiplier and whether
        the classification branch is stored.

    Raises
    ------
    WeightsError
        Naming the file and what is wrong: missing, unreadable, corrupt, or no known format.
    """
    return _inspect(path)[0]


def _inspect(path):
    fmt, arrays = _read(path)
    num_classes, width, has_classifier = _architecture(path, fmt, arrays)
    return WeightsInfo(Path(path), fmt, num_classes, width, has_classifier), arrays


def load_network_weights(net, path, ctx=None):
    """Load any weights file into an initialised MLSLNet (or ResNet38 trunk); the one loader.

    What a file lacks keeps its current values (logged): the segmentation head for the
    ImageNet model, the classification branch for files without it. A branch stored in the
    file is skipped when ``net`` has none. Everything else must match exactly.

    Parameters
    ----------
    net : MLSLNet or ResNet38
        Initialised network.
    path : str or Path
    ctx : Context or list of Context, optional
        Where to initialise parameters not initialised yet (Gluon formats).

    Returns
    -------
    WeightsInfo

    Raises
    ------
    WeightsError
        Naming the file and every problem; ``net`` is unchanged.
    """
    info, arrays = _inspect(path)
    path = info.path
    try:
        if info.format.startswith("ademxapp"):
            assign_ademxapp_arrays(net, path, arrays, allow_missing=info.format == "ademxapp-imagenet")
            return info
        if info.format == "symbol":
            arrays = _by_name(net, arrays)
        expected = net._collect_params_with_prefix()
        has_branch = any(k.startswith(_GLUON_BRANCH) for k in expected)
        # Exported branch arrays keep their Gluon names ('cls_conv1_weight') when net has no
        # branch to map them onto.
        ignored = [k for k in arrays if k.startswith(("cls_", _GLUON_BRANCH))] if not has_branch else []
        optional = [k for k in expected if k.startswith(_GLUON_BRANCH)] \
            if has_branch and not info.has_classifier else []
        if optional:
            logger.info("%s: no classification branch in the file; the branch keeps its initial "
                        "values", path)
        assign_gluon_arrays(net, path, arrays, ctx, optional, ignored)
    except ValueError as err:
        raise WeightsError(str(err)) from None
    return info


def build_network_from_weights(path, ctx, num_classes=None, width=None, with_classifier=False):
    """An MLSLNet shaped after a weights file and loaded from it (evaluate, predict, export).

    Parameters
    ----------
    path : str or Path
    ctx : list of mx.Context
    num_classes, width : optional
        Checked against the file; default: read from it.
    with_classifier : bool
        Build the classification branch too.

    Returns
    -------
    (MLSLNet, WeightsInfo)
        The network is initialised on every context, not hybridized.

    Raises
    ------
    WeightsError
        For the ImageNet model (no segmentation head), a class count other than
        ``num_classes``, or any loading problem (with the width the file suggests).
    """
    info = inspect_weights(path)
    if not info.segmentation:
        raise WeightsError("{}: this is the ImageNet classification model (linear1000), not a "
                           "segmentation model; it is only a starting point for `mlsl-gluon "
                           "train`".format(path))
    if num_classes is not None and num_classes != info.num_classes:
        raise WeightsError("{}: holds a {}-class model but --num-classes is {}".format(
            path, info.num_classes, num_classes))
    if width is None:
        width = 1.0 if info.width is None else info.width
    net = MLSLNet(num_classes=info.num_classes, width=width, with_classifier=with_classifier)
    init_params(net, ctx=ctx)
    try:
        load_network_weights(net, path, ctx=ctx)
    except WeightsError as err:
        hint = "" if info.width is None else "; the file's conv1a suggests --width {:g}".format(info.width)
        raise WeightsError("{}\n(network built with num_classes={}, width={:g}{})".format(
            err, info.num_classes, width, hint)) from None
    logger.info("loaded %s (%s format, %d classes, width %g)", path, info.format, info.num_classes, width)
    return net, info

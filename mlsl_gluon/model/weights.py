"""Weight files: ademxapp/CBST ``.params`` files and our own checkpoints.

ademxapp/CBST files are ``mx.nd.save`` dicts with keys ``arg:<name>`` (conv weights/biases,
BN gamma/beta) and ``aux:<name>`` (BN moving mean/var) under ademxapp layer names
(``conv1a_weight``, ``bn2a_branch2a_gamma``, ``aux:bn7_moving_var``, ``linear19_bias``, ...).
Our own files are Gluon ``save_parameters`` files (structured names, e.g.
``trunk.res2a.res_branch2a.weight``), written atomically.

Every loader validates the whole file against the network before assigning anything, so a
bad file raises one error that lists every problem and leaves the network unchanged.
"""
import logging
import os
import re
from pathlib import Path

import mxnet as mx
from mxnet.gluon import nn

from .mlsl_net import default_initializer

logger = logging.getLogger(__name__)

# The ImageNet model's 1000-way classifier on pool7: no counterpart in the segmentation net.
IMAGENET_CLASSIFIER = re.compile(r"^arg:linear1000_(weight|bias)$")
_MAX_LISTED = 20


def ademxapp_param_map(net):
    """Map ademxapp file keys onto the parameters of ``net``.

    Parameters
    ----------
    net : MLSLNet or ResNet38
        Any block with an ``ademxapp_layers()`` method yielding (layer name, Conv2D/BatchNorm).

    Returns
    -------
    dict
        ``{'arg:conv1a_weight': Parameter, ..., 'aux:bn7_moving_var': Parameter}`` in network
        order.
    """
    mapping = {}
    for name, block in net.ademxapp_layers():
        if isinstance(block, nn.BatchNorm):
            mapping["arg:{}_gamma".format(name)] = block.gamma
            mapping["arg:{}_beta".format(name)] = block.beta
            mapping["aux:{}_moving_mean".format(name)] = block.running_mean
            mapping["aux:{}_moving_var".format(name)] = block.running_var
        elif isinstance(block, nn.Conv2D):
            mapping["arg:{}_weight".format(name)] = block.weight
            if block.bias is not None:
                mapping["arg:{}_bias".format(name)] = block.bias
        else:
            raise TypeError("ademxapp layer {} is a {}, expected Conv2D or BatchNorm".format(
                name, type(block).__name__))
    return mapping


def _listing(title, items):
    items = list(items)
    shown = items[:_MAX_LISTED]
    more = "" if len(items) <= _MAX_LISTED else "\n    ... and {} more".format(len(items) - _MAX_LISTED)
    return "  {} ({}):\n    {}{}".format(title, len(items), "\n    ".join(shown), more)


def _read_param_dict(path):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError("weight file not found: {}".format(path))
    try:
        loaded = mx.nd.load(str(path))
    except mx.base.MXNetError as err:
        raise ValueError("{}: not a readable MXNet .params file ({})".format(
            path, str(err).strip().splitlines()[0])) from err
    if not isinstance(loaded, dict):
        raise ValueError("{}: holds an unnamed list of {} arrays, expected a name -> array "
                         "dict".format(path, len(loaded)))
    return path, loaded


def _is_initialized(param):
    try:
        param.list_ctx()
    except RuntimeError:
        return False
    return True


def _check_initialized(path, params):
    uninitialized = [name for name, param in params.items() if not _is_initialized(param)]
    if uninitialized:
        raise RuntimeError("cannot load {}: initialise the network first (init_params); "
                           "uninitialised parameters: {}".format(path, ", ".join(uninitialized[:5])))


def _validate(path, loaded, expected, allow_missing, ignored, what):
    """One error listing every missing / unexpected / mis-shaped key, or the missing list."""
    missing = [k for k in expected if k not in loaded]
    unexpected = sorted(k for k in loaded if k not in expected and k not in ignored)
    mismatched = ["{}: file {} vs network {}".format(k, tuple(loaded[k].shape), tuple(p.shape))
                  for k, p in expected.items() if k in loaded and tuple(loaded[k].shape) != tuple(p.shape)]
    problems = []
    if missing and not allow_missing:
        problems.append(_listing("missing keys", missing))
    if unexpected:
        problems.append(_listing("unexpected keys", unexpected))
    if mismatched:
        problems.append(_listing("shape mismatches", mismatched))
    if problems:
        raise ValueError("{}: does not match the network ({}); nothing was loaded.\n{}".format(
            path, what, "\n".join(problems)))
    return missing


def _describe(net):
    return "{}(num_classes={}, width={})".format(
        type(net).__name__, getattr(net, "num_classes", "-"), getattr(net, "width", "-"))


def load_ademxapp_params(net, path, allow_missing=False):
    """Load an ademxapp/CBST ``.params`` file into ``net`` (trunk and segmentation head).

    Parameters
    ----------
    net : MLSLNet or ResNet38
        Initialised network. The classification branch is not in these files and keeps its
        current values.
    path : str or Path
        ``mx.nd.save`` dict with ``arg:``/``aux:`` keys in ademxapp naming, e.g.
        ``gta_rna-a1_cls19_s8_ep-0000.params``.
    allow_missing : bool
        Accept files lacking some of the network's keys (e.g. the ImageNet file has no
        ``conv6a``/``linear<C>``); those parameters keep their values and are reported.

    Returns
    -------
    dict
        ``{'loaded': [...], 'missing': [...], 'ignored': [...]}`` lists of file keys.

    Raises
    ------
    ValueError
        Naming the file and every missing (unless allowed), unexpected or mis-shaped key;
        the network is unchanged.
    """
    path, loaded = _read_param_dict(path)
    if loaded and not any(k.startswith(("arg:", "aux:")) for k in loaded):
        raise ValueError("{}: no 'arg:'/'aux:' keys, so not an ademxapp/CBST file (a save_weights "
                         "checkpoint? read those with load_weights)".format(path))
    expected = ademxapp_param_map(net)
    _check_initialized(path, expected)
    ignored = sorted(k for k in loaded if IMAGENET_CLASSIFIER.match(k))
    missing = _validate(path, loaded, expected, allow_missing, set(ignored), _describe(net))
    for key, param in expected.items():
        if key in loaded:
            param.set_data(loaded[key].astype(param.dtype, copy=False))
    if ignored:
        logger.info("%s: ignored the ImageNet 1000-class classifier (%s)", path, ", ".join(ignored))
    if missing:
        logger.warning("%s: %d network parameters not in the file keep their initial values: %s",
                       path, len(missing), ", ".join(missing))
    loaded_keys = [k for k in expected if k in loaded]
    logger.info("%s: loaded %d ademxapp arrays into %s", path, len(loaded_keys), _describe(net))
    return {"loaded": loaded_keys, "missing": missing, "ignored": ignored}


def save_weights(net, path):
    """Write all parameters of ``net`` to ``path`` (Gluon structured names), atomically.

    The file is written next to ``path`` under a temporary name and moved into place, so a
    crash never leaves a truncated checkpoint behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".{}.tmp-{}".format(path.name, os.getpid()))
    try:
        net.save_parameters(str(tmp))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_weights(net, path, ctx=None, allow_missing=False):
    """Load a file written by :func:`save_weights` into ``net``.

    Parameters
    ----------
    net : Block
        Network of the same architecture (names and shapes must match).
    path : str or Path
        The checkpoint.
    ctx : Context or list of Context, optional
        Where to initialise parameters that are not initialised yet.
    allow_missing : bool
        Accept a file lacking some parameters (e.g. no classification branch); they keep
        their values, or get the default initializer if they had none.

    Raises
    ------
    ValueError
        Naming the file and every missing, unexpected or mis-shaped parameter; the network
        is unchanged.
    """
    path, loaded = _read_param_dict(path)
    if loaded and all(k.startswith(("arg:", "aux:")) for k in loaded):
        raise ValueError("{}: 'arg:'/'aux:' keys, so an ademxapp/CBST or exported symbol file, not "
                         "a save_weights checkpoint (read ademxapp files with "
                         "load_ademxapp_params)".format(path))
    expected = net._collect_params_with_prefix()
    missing = _validate(path, loaded, expected, allow_missing, set(), _describe(net))
    for key, param in expected.items():
        if not _is_initialized(param):
            # A parameter's own initializer (zeros for biases, ones for BN gamma) wins over
            # the default one; values from the file overwrite either right after.
            param.initialize(ctx=ctx, default_init=default_initializer())
        if key in loaded:
            param.set_data(loaded[key].astype(param.dtype, copy=False))
    if missing:
        logger.warning("%s: %d parameters not in the file keep their values: %s",
                       path, len(missing), ", ".join(missing))
    return net

"""Weight files: ademxapp/CBST/MLSL ``.params`` files and our own Gluon weights.

ademxapp/CBST files are ``mx.nd.save`` dicts with keys ``arg:<name>`` (conv weights/biases,
BN gamma/beta) and ``aux:<name>`` (BN moving mean/var) under ademxapp layer names
(``conv1a_weight``, ``bn2a_branch2a_gamma``, ``aux:bn7_moving_var``, ``linear19_bias``, ...):
195 keys for a segmentation model. The authors' MLSL-PWL files add the classification branch
under the MLSL release's names (8 keys: ``conv61a``, ``logistic<C>``, ``bCls0``, ``bCls1``
weights and biases; see :meth:`MLSLNet.ademxapp_layers`), 203 in all.
Our own files are Gluon ``save_parameters`` files (structured names, e.g.
``trunk.res2a.res_branch2a.weight``), written atomically.

Every loader validates the whole file against the network before assigning anything, so a
bad file raises one error that lists every problem and leaves the network unchanged. Which
format a file is in, and the one loader the commands use, are in :mod:`.weight_files`.
"""
import logging
import re
from pathlib import Path

import mxnet as mx
from mxnet.gluon import nn

from ..io import atomic_write_file
from .mlsl_net import default_initializer

logger = logging.getLogger(__name__)

# The ImageNet model's 1000-way classifier on pool7: no counterpart in the segmentation net.
IMAGENET_CLASSIFIER = re.compile(r"^arg:linear1000_(weight|bias)$")
# The classification branch of the authors' MLSL-PWL files (MLSLNet.ademxapp_layers).
RELEASED_BRANCH = re.compile(r"^arg:(conv61a|logistic\d+|bCls0|bCls1)_(weight|bias)$")
_MAX_LISTED = 20


def ademxapp_param_map(net):
    """Map ademxapp file keys onto the parameters of ``net``.

    Parameters
    ----------
    net : MLSLNet or ResNet38
        Any block with an ``ademxapp_layers()`` method yielding (layer name, Conv2D / Dense /
        BatchNorm).

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
        elif isinstance(block, (nn.Conv2D, nn.Dense)):
            mapping["arg:{}_weight".format(name)] = block.weight
            if block.bias is not None:
                mapping["arg:{}_bias".format(name)] = block.bias
        else:
            raise TypeError("ademxapp layer {} is a {}, expected Conv2D, Dense or BatchNorm".format(
                name, type(block).__name__))
    return mapping


def _listing(title, items):
    items = list(items)
    shown = items[:_MAX_LISTED]
    more = "" if len(items) <= _MAX_LISTED else "\n    ... and {} more".format(len(items) - _MAX_LISTED)
    return "  {} ({}):\n    {}{}".format(title, len(items), "\n    ".join(shown), more)


# First 8 bytes of every mx.nd.save file (kMXAPINDArrayListMagic, little-endian uint64).
_ND_LIST_MAGIC = (0x112).to_bytes(8, "little")


def _unreadable_reason(path):
    """Why ``mx.nd.load`` failed on a file, in words (MXNet itself only offers a C++ traceback)."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(len(_ND_LIST_MAGIC))
    if size == 0:
        return "empty file (0 bytes); copy or download it again"
    if head == _ND_LIST_MAGIC:
        return ("truncated or corrupted MXNet .params file ({} bytes: the header is intact, the arrays "
                "are not); copy or download it again".format(size))
    return ("not an MXNet .params weights file (no MXNet array-list header in its first bytes); pass "
            "a .params file written by MXNet")


def read_param_dict(path):
    """``(Path, {name: NDArray})`` of an ``mx.nd.save`` dict file; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError("weight file not found: {}".format(path))
    try:
        loaded = mx.nd.load(str(path))
    except mx.base.MXNetError:
        raise ValueError("{}: {}".format(path, _unreadable_reason(path))) from None
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


def _validate(path, loaded, expected, optional, ignored, what):
    """One error listing every required-but-missing / unexpected / mis-shaped key.

    ``optional`` keys of ``expected`` may be absent from the file; ``ignored`` keys of the file
    have no counterpart and are skipped. Returns the absent keys of ``expected``.
    """
    missing = [k for k in expected if k not in loaded]
    required = [k for k in missing if k not in optional]
    unexpected = sorted(k for k in loaded if k not in expected and k not in ignored)
    mismatched = ["{}: file {} vs network {}".format(k, tuple(loaded[k].shape), tuple(p.shape))
                  for k, p in expected.items() if k in loaded and tuple(loaded[k].shape) != tuple(p.shape)]
    problems = []
    if required:
        problems.append(_listing("missing keys", required))
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


def _branch_keys(net, mapping):
    """The keys of ``mapping`` that belong to the classification branch of ``net``."""
    branch = getattr(net, "cls_branch", None)
    if branch is None:
        return set()
    ids = {id(p) for p in branch.collect_params().values()}
    return {k for k, p in mapping.items() if id(p) in ids}


def assign_ademxapp_arrays(net, path, loaded, allow_missing=False):
    """Validate ``loaded`` (ademxapp names) against ``net``, then copy it in.

    The classification branch is optional on both sides: a CBST file (no branch) leaves the
    branch of ``net`` as initialised, and a network without a branch skips an MLSL-PWL
    file's branch; a file holding only part of the branch is an error. See
    :func:`load_ademxapp_params` for the arguments and the returned report.
    """
    expected = ademxapp_param_map(net)
    _check_initialized(path, expected)
    branch = _branch_keys(net, expected)
    branch_absent = bool(branch) and not any(k in loaded for k in branch)
    ignored = sorted(k for k in loaded if IMAGENET_CLASSIFIER.match(k)
                     or (not branch and RELEASED_BRANCH.match(k)))
    optional = set(expected) if allow_missing else (branch if branch_absent else set())
    missing = _validate(path, loaded, expected, optional, set(ignored), _describe(net))
    for key, param in expected.items():
        if key in loaded:
            param.set_data(loaded[key].astype(param.dtype, copy=False))
    kept = sorted(branch) if branch_absent else []
    missing = [k for k in missing if k not in kept]
    if ignored:
        logger.info("%s: ignored %d arrays the network has no layer for (%s)", path, len(ignored),
                    ", ".join(ignored))
    if kept:
        logger.info("%s: a CBST file without the MLSL classification branch; the branch keeps its "
                    "initial values", path)
    if missing:
        logger.warning("%s: %d network parameters not in the file keep their initial values: %s",
                       path, len(missing), ", ".join(missing))
    loaded_keys = [k for k in expected if k in loaded]
    logger.info("%s: loaded %d ademxapp arrays into %s", path, len(loaded_keys), _describe(net))
    return {"loaded": loaded_keys, "missing": missing, "ignored": ignored, "branch_kept": kept}


def load_ademxapp_params(net, path, allow_missing=False):
    """Load an ademxapp/CBST or MLSL-PWL ``.params`` file into ``net``.

    Parameters
    ----------
    net : MLSLNet or ResNet38
        Initialised network.
    path : str or Path
        ``mx.nd.save`` dict with ``arg:``/``aux:`` keys in ademxapp naming, e.g. the CBST
        ``gta_rna-a1_cls19_s8_ep-0000.params`` (195 keys: trunk and segmentation head) or an
        MLSL-PWL checkpoint of the authors' code (203 keys: also the classification branch).
        A CBST file leaves the classification branch of ``net`` as it is (logged).
    allow_missing : bool
        Accept files lacking some of the network's keys (e.g. the ImageNet file has no
        ``conv6a``/``linear<C>``); those parameters keep their values and are reported.

    Returns
    -------
    dict
        ``{'loaded', 'missing', 'ignored', 'branch_kept'}``: lists of keys (``branch_kept``:
        the branch keys a CBST file lacks).

    Raises
    ------
    ValueError
        Naming the file and every missing (unless allowed), unexpected or mis-shaped key;
        the network is unchanged.
    """
    path, loaded = read_param_dict(path)
    if loaded and not any(k.startswith(("arg:", "aux:")) for k in loaded):
        raise ValueError("{}: no 'arg:'/'aux:' keys, so not an ademxapp/CBST file (a save_weights "
                         "checkpoint? read those with load_weights)".format(path))
    return assign_ademxapp_arrays(net, path, loaded, allow_missing)


def save_ademxapp_params(net, path):
    """Write ``net`` in the ademxapp/MLSL key format, atomically (CPU float32 arrays).

    With the classification branch the file has the 203 keys of the authors' MLSL-PWL
    checkpoints, so it runs in their code (``mx.model.load_checkpoint``-style ``arg:``/``aux:``
    dict); without it, the 195 keys of a CBST model.
    """
    arrays = {key: param.data().as_in_context(mx.cpu()) for key, param in ademxapp_param_map(net).items()}
    atomic_write_file(path, lambda name: mx.nd.save(name, arrays))
    return Path(path)


def save_weights(net, path):
    """Write all parameters of ``net`` to ``path`` (Gluon structured names), atomically.

    The file is written next to ``path`` under a temporary name and moved into place, so a
    crash never leaves a truncated checkpoint behind.
    """
    atomic_write_file(path, lambda name: net.save_parameters(name))
    return Path(path)


def assign_gluon_arrays(net, path, loaded, ctx=None, optional=(), ignored=()):
    """Validate ``loaded`` (Gluon structured names) against ``net``, then copy it in.

    ``optional`` parameters may be absent from the file (they keep their values, or get the
    default initializer if they had none); ``ignored`` file keys are skipped. Raises
    ValueError naming the file and every problem, with ``net`` unchanged.
    """
    expected = net._collect_params_with_prefix()
    missing = _validate(path, loaded, expected, set(optional), set(ignored), _describe(net))
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


def load_weights(net, path, ctx=None, allow_missing=False):
    """Load a file written by :func:`save_weights` into ``net``.

    Parameters
    ----------
    net : Block
        Network of the same architecture (names and shapes must match).
    path : str or Path
        The weights file.
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
    path, loaded = read_param_dict(path)
    if loaded and all(k.startswith(("arg:", "aux:")) for k in loaded):
        raise ValueError("{}: 'arg:'/'aux:' keys, so an ademxapp/CBST or exported symbol file, not "
                         "a save_weights checkpoint (read ademxapp files with "
                         "load_ademxapp_params)".format(path))
    optional = net._collect_params_with_prefix() if allow_missing else ()
    return assign_gluon_arrays(net, path, loaded, ctx, optional)

"""Training checkpoints: network parameters + trainer states + a JSON state, in ONE file.

File layout (all written at once, then renamed into place, so a checkpoint is complete or
absent): the magic line ``MLSLCKPT1\\n``, an 8-byte little-endian header length, a UTF-8 JSON
header, then the sections the header lists in order. The header holds the caller's ``state``
dict and, for every section, its byte size and SHA-256, so truncation or corruption is
detected on load. Sections: ``params`` (``Block.save_parameters`` format) and, when the
trainer's states are available, ``trainer`` (``Trainer.save_states`` format).
"""
import hashlib
import json
import logging
import os
import struct

from ..io import atomic_write_bytes, bytes_written_by, read_via_file

logger = logging.getLogger(__name__)

MAGIC = b"MLSLCKPT1\n"
_LENGTH = struct.Struct("<Q")


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, corrupt, or does not fit the network."""


def _trainer_states(trainer, directory):
    try:
        return bytes_written_by(trainer.save_states, directory)
    except AssertionError as err:
        # MXNet cannot dump optimiser states that live on a parameter server.
        logger.warning("trainer states not saved (%s); momentum restarts on resume", err)
        return None


def save_checkpoint(path, net, trainer, state):
    """Atomically write the network parameters, trainer states and ``state`` to ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        Checkpoint file; its directory must exist. An existing file is replaced atomically.
    net : gluon.Block
    trainer : gluon.Trainer or None
        Its optimiser states (momentum) are saved when given.
    state : dict
        JSON-serialisable caller state (round index, iteration, RNG states, ...).
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        header_state = json.loads(json.dumps(state))
    except (TypeError, ValueError) as err:
        raise TypeError(f"checkpoint state for {path} is not JSON-serialisable: {err}") from None
    sections = [("params", bytes_written_by(net.save_parameters, directory))]
    if trainer is not None:
        states = _trainer_states(trainer, directory)
        if states is not None:
            sections.append(("trainer", states))
    header = {
        "state": header_state,
        "sections": [{"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                     for name, data in sections],
    }
    header_bytes = json.dumps(header, sort_keys=True).encode("utf-8")
    atomic_write_bytes(path, b"".join([MAGIC, _LENGTH.pack(len(header_bytes)), header_bytes]
                                      + [data for _, data in sections]))


def read_checkpoint(path):
    """Read and verify a checkpoint file without touching any network.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    state : dict
        The caller state stored with :func:`save_checkpoint`.
    sections : dict of str -> bytes
        ``params`` and possibly ``trainer``.

    Raises
    ------
    CheckpointError
        Naming the file, when it is missing, truncated, or fails its checksums.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            blob = handle.read()
    except OSError as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err}") from None
    if not blob.startswith(MAGIC):
        raise CheckpointError(f"{path} is not an mlsl-gluon checkpoint (bad magic bytes)")
    start = len(MAGIC) + _LENGTH.size
    if len(blob) < start:
        raise CheckpointError(f"checkpoint {path} is truncated (no header)")
    (header_len,) = _LENGTH.unpack(blob[len(MAGIC):start])
    try:
        header = json.loads(blob[start:start + header_len].decode("utf-8"))
        entries = header["sections"]
        state = header["state"]
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt (unreadable header)") from None
    offset = start + header_len
    sections = {}
    for entry in entries:
        data = blob[offset:offset + entry["size"]]
        if len(data) != entry["size"]:
            raise CheckpointError(f"checkpoint {path} is truncated: section {entry['name']!r} has "
                                  f"{len(data)} of {entry['size']} bytes")
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise CheckpointError(f"checkpoint {path} is corrupt: checksum mismatch in "
                                  f"section {entry['name']!r}")
        sections[entry["name"]] = data
        offset += entry["size"]
    if offset != len(blob):
        raise CheckpointError(f"checkpoint {path} is corrupt: {len(blob) - offset} unexpected trailing bytes")
    if "params" not in sections:
        raise CheckpointError(f"checkpoint {path} has no network parameters")
    return state, sections


def load_checkpoint(path, net, trainer=None):
    """Load a checkpoint written by :func:`save_checkpoint` into ``net`` (and ``trainer``).

    The file is verified completely (size and checksums) before anything is loaded, so a
    truncated or corrupt file leaves ``net`` untouched; a file of a different architecture is
    rejected too, possibly after some parameters were overwritten.

    Parameters
    ----------
    path : str or os.PathLike
    net : gluon.Block
        Initialised network with the same structure; its parameters are overwritten.
    trainer : gluon.Trainer or None
        If given, its optimiser states (momentum, learning rate) are restored when present.

    Returns
    -------
    dict
        The ``state`` passed to :func:`save_checkpoint`.

    Raises
    ------
    CheckpointError
        Naming the file, when it is missing, truncated, corrupt, or does not fit ``net``.
    """
    path = os.fspath(path)
    state, sections = read_checkpoint(path)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        read_via_file(sections["params"], net.load_parameters, directory)
    except (AssertionError, ValueError, KeyError, RuntimeError) as err:
        raise CheckpointError(f"checkpoint {path} does not fit the network: {err}") from None
    if trainer is not None:
        if "trainer" in sections:
            read_via_file(sections["trainer"], trainer.load_states, directory)
        else:
            logger.warning("checkpoint %s holds no trainer states; momentum restarts", path)
    return state

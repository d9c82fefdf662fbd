"""Files that are complete or absent: every file the package writes goes through here.

A writer puts the data into a temporary file in the destination's folder, flushes it to disk
(fsync), then renames it over the destination (``os.replace``, atomic within one file
system) and syncs the folder, so a crash or a kill leaves either the old file or the new one,
never a truncated one. The temporary file is removed when writing fails.
"""
import io
import json
import os
import tempfile

import numpy as np


def _fsync_folder(folder):
    # Makes the rename itself durable; not supported on every platform/filesystem.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(name):
    with open(name, "rb") as handle:
        os.fsync(handle.fileno())


def atomic_write_file(path, write):
    """Let ``write(temporary_name)`` produce a file, then move it to ``path`` atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; its folder is created if needed. An existing file is replaced.
    write : callable
        Called with the name of an empty temporary file in the same folder; it writes the
        whole content there (e.g. ``net.save_parameters``, ``Trainer.save_states``).

    Returns
    -------
    str
        ``path`` as a string.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix="-" + os.path.basename(path))
    os.close(fd)
    try:
        write(tmp)
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_folder(folder)
    return path


def atomic_write_bytes(path, data):
    """Write ``data`` (bytes) to ``path`` atomically (see :func:`atomic_write_file`)."""
    def write(name):
        with open(name, "wb") as handle:
            handle.write(data)

    return atomic_write_file(path, write)


def atomic_write_text(path, text):
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj):
    """Write ``obj`` as indented JSON with sorted keys and a final newline, atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


def npz_bytes(**arrays):
    """The bytes of an .npz file holding ``arrays`` (``np.savez``)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def bytes_written_by(write, folder):
    """The bytes an API that only writes to a file name produces (``write(name)``).

    MXNet's ``save_parameters`` / ``Trainer.save_states`` have no in-memory form; the scratch
    file lives in ``folder`` (next to the final file, so on the same disk) and is removed.
    """
    fd, name = tempfile.mkstemp(prefix=".scratch-", suffix=".bin", dir=folder)
    os.close(fd)
    try:
        write(name)
        with open(name, "rb") as handle:
            return handle.read()
    finally:
        os.remove(name)


def read_via_file(data, read, folder):
    """``read(name)`` on a scratch file in ``folder`` holding ``data``: for APIs that only read
    from a file name (``Trainer.load_states``); the file is removed afterwards."""
    fd, name = tempfile.mkstemp(prefix=".scratch-", suffix=".bin", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        return read(name)
    finally:
        os.remove(name)

"""Checks that an output path can be written, made before any work starts.

A command that finds out only at its end that ``--out`` is read-only, or lies under a regular
file, has wasted the whole computation; these checks run first and create nothing.
"""
import os
import tempfile
from pathlib import Path


class OutputError(ValueError):
    """An output path cannot be written; the message names it and says what to do."""


def _existing_ancestor(path):
    ancestor = path
    while not os.path.lexists(ancestor):
        ancestor = ancestor.parent
    return ancestor


def _probe(path, folder, option):
    """Create and remove a file in ``folder``: the only check that also holds for root, ACLs and
    read-only mounts."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".mlsl-write-check-", dir=folder)
    except OSError as err:
        raise OutputError(f"{path}: cannot write in {folder} ({err.strerror}); check its permissions "
                          f"or choose another {option}") from None
    os.close(fd)
    os.unlink(probe)


def check_output_folder(path, option="--out"):
    """``path`` is, or can be created as, a folder this process can write into.

    Parameters
    ----------
    path : str or Path
    option : str
        The command-line option that named it (for the message).

    Returns
    -------
    Path

    Raises
    ------
    OutputError
        When ``path`` is a file, lies under a regular file, or its nearest existing folder is
        not writable.
    """
    path = Path(path)
    ancestor = _existing_ancestor(path)
    if not ancestor.is_dir():
        where = "is a regular file" if ancestor == path else f"lies under the regular file {ancestor}"
        raise OutputError(f"{path}: {where}, not a folder; choose another {option}")
    _probe(path, ancestor, option)
    return path


def check_output_file(path, option="--out"):
    """``path`` can be written as a file (its folder exists or can be created, and is writable).

    Raises
    ------
    OutputError
        When ``path`` is a folder, lies under a regular file, or cannot be written.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a folder, a file name is expected; choose another {option}")
    ancestor = _existing_ancestor(path.parent)
    if not ancestor.is_dir():
        raise OutputError(f"{path}: lies under the regular file {ancestor}, not a folder; choose "
                          f"another {option}")
    _probe(path, ancestor, option)
    return path

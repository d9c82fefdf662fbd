"""The `mlsl-gluon` command line. Each command lives in the module of its concern.

The group is also the error boundary: the package's own error types and operating-system
errors raised by any command end as one line ``Error: <file>: <what is wrong>; <what to do>``
with exit status 1 (click's usage errors keep status 2). ``--debug`` or ``MLSL_GLUON_DEBUG=1``
lets the exception through with its traceback instead.
"""
import errno
import logging
import os

import click

from .. import __version__
from . import data_cmds, demo_cmds, eval_cmds, pseudo_cmds, train_cmds

logger = logging.getLogger(__name__)

DEBUG_ENV = "MLSL_GLUON_DEBUG"

# errno -> what to do; the OS already says what is wrong (strerror).
_OS_ADVICE = {
    errno.EACCES: "check its permissions or choose another path",
    errno.EPERM: "check its permissions or choose another path",
    errno.EROFS: "the file system is read-only; choose a path on a writable disk",
    errno.ENOTDIR: "a part of the path is a regular file, not a folder; choose another path",
    errno.EISDIR: "a folder is in the way of a file; choose another path",
    errno.ENOENT: "check the path",
    errno.ENOSPC: "free disk space, then run the same command again (add --resume for train)",
    errno.EDQUOT: "free disk space, then run the same command again (add --resume for train)",
    errno.EEXIST: "choose another path",
}


def _package_errors():
    """The package's own error types (imported late: they pull in MXNet)."""
    from ..config import ConfigError
    from ..data import DatasetError
    from ..model.weight_files import WeightsError
    from ..preflight import OutputError
    from ..pseudo_labels import CacheError
    from ..training.checkpoint import CheckpointError
    from ..training.engine import NonFiniteLossError
    from ..training.inputs import InputError
    from ..training.lock import RunLockedError
    from ..training.stage import TrainingStopped

    return (ConfigError, DatasetError, CacheError, CheckpointError, NonFiniteLossError, InputError,
            OutputError, RunLockedError, TrainingStopped, WeightsError)


def describe_os_error(err):
    """``'<file>: <what is wrong>; <what to do>'`` for an OSError."""
    what = err.strerror or str(err)
    advice = _OS_ADVICE.get(err.errno, "check the path and the disk")
    if err.filename is None:
        return f"{what}; {advice}"
    target = f" -> {err.filename2}" if err.filename2 is not None else ""
    name = os.fsdecode(err.filename) if isinstance(err.filename, bytes) else err.filename
    return f"{name}{target}: {what}; {advice}"


def error_line(err):
    """The ``Error:`` text of an exception the boundary handles, or None when it does not."""
    if isinstance(err, _package_errors()):
        return str(err)
    if isinstance(err, OSError):
        return describe_os_error(err)
    return None


class ErrorBoundaryGroup(click.Group):
    """A click group turning expected failures into one ``Error:`` line, exit status 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as err:  # noqa: BLE001 - filtered by error_line; the rest re-raised
            line = error_line(err)
            if line is None or _debug(ctx):
                raise
            logger.debug("error at the command line boundary", exc_info=True)
            _close_progress_bars()
            raise click.ClickException(line) from None


def _close_progress_bars():
    """Close the bars an exception left open, so the error starts on a line of its own."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def _debug(ctx):
    return bool(ctx.params.get("debug")) or os.environ.get(DEBUG_ENV, "") not in ("", "0")


@click.group(cls=ErrorBoundaryGroup,
             context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="mlsl-gluon")
@click.option("-v", "--verbose", is_flag=True, help="Log at DEBUG level instead of INFO.")
@click.option("--debug", is_flag=True,
              help=f"Show the full traceback of an error instead of one line (or set {DEBUG_ENV}=1).")
def main(verbose, debug):
    """MLSL (Iqbal & Ali, WACV 2020) in MXNet/Gluon: SISC pseudo-labels and pseudo weak labels
    for unsupervised domain adaptation of semantic segmentation (GTA5/SYNTHIA -> Cityscapes)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


for _module in (data_cmds, pseudo_cmds, train_cmds, eval_cmds, demo_cmds):
    for _command in _module.COMMANDS:
        main.add_command(_command)

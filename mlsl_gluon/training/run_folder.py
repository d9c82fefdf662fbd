"""A run folder: resolved config, provenance, JSON-lines metrics, checkpoints, pseudo-labels.

Layout::

    OUT/config.yaml            resolved configuration (the resume check compares against it)
    OUT/run.json               package version, git hash, command line, start time
    OUT/metrics.jsonl          one JSON object per line: losses, lr, mIoU, pseudo-label stats
    OUT/checkpoints/latest.*   the newest consistent state (mid-epoch or end of a round)
    OUT/checkpoints/round_RR.* the state after round RR (source_only.* for source-only runs)
    OUT/round_RR/pseudo/       labels/<name>.png, weak_labels.json, stats.json of round RR
    OUT/DONE                   written when the whole run finished
"""
import datetime
import json
import logging
import subprocess
import sys
from pathlib import Path

from .. import __version__
from ..config import ConfigError, config_differences, dump_config, load_config
from ..io import atomic_write_file, atomic_write_text

logger = logging.getLogger(__name__)


def git_hash():
    """The package checkout's commit (with ``-dirty`` for uncommitted changes), or 'unknown'."""
    package_dir = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=package_dir, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=package_dir,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


class RunFolder:
    """Create or reopen the folder of one run.

    Parameters
    ----------
    path : str or Path
        The run folder (``--out``).
    config : Config
        The resolved configuration of this invocation.
    resume : bool
        Continue the run already in ``path``. Without it an existing run is never overwritten.

    Raises
    ------
    ConfigError
        When ``path`` holds a run and ``resume`` is False, or holds a run with another config.
    """

    def __init__(self, path, config, resume=False):
        self.path = Path(path)
        self.config = config
        config_file = self.path / "config.yaml"
        if config_file.is_file():
            if not resume:
                raise ConfigError(f"{self.path} already holds a run (config.yaml); pass --resume to continue "
                                  f"it or choose another --out")
            previous = load_config(config_file)
            differences = config_differences(previous, config)
            if differences:
                raise ConfigError(f"refusing to resume {self.path}: its config.yaml differs from this "
                                  f"command's configuration in " + "; ".join(differences))
            logger.info("resuming the run in %s", self.path)
            self.resumed = True
            self._drop_partial_log_line()
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            self.resumed = False
            atomic_write_file(config_file, lambda name: dump_config(config, name))
        self.checkpoint_dir.mkdir(exist_ok=True)
        self._write_provenance()

    def _drop_partial_log_line(self):
        # A run killed while appending leaves half a line; the next record must not extend it.
        log_file = self.path / "metrics.jsonl"
        if not log_file.is_file():
            return
        text = log_file.read_bytes()
        if text and not text.endswith(b"\n"):
            with open(log_file, "r+b") as stream:
                stream.truncate(text.rfind(b"\n") + 1)
            logger.warning("%s: dropped a line cut short when the run was killed", log_file)

    def _write_provenance(self):
        record = {"package": "mlsl-gluon", "version": __version__, "git_hash": git_hash(),
                  "command": sys.argv, "time": datetime.datetime.now(datetime.timezone.utc).isoformat()}
        runs_file = self.path / "run.json"
        history = json.loads(runs_file.read_text()) if runs_file.is_file() else []
        history.append(record)
        atomic_write_text(runs_file, json.dumps(history, indent=1))

    @property
    def checkpoint_dir(self):
        return self.path / "checkpoints"

    @property
    def latest_checkpoint(self):
        """Path of the newest consistent checkpoint."""
        return self.checkpoint_dir / "latest.params"

    def round_checkpoint(self, round_idx):
        """Path of the checkpoint written at the end of round ``round_idx``."""
        return self.checkpoint_dir / f"round_{round_idx:02d}.params"

    def pseudo_dir(self, round_idx):
        """Folder of round ``round_idx``'s pseudo-labels."""
        return self.path / f"round_{round_idx:02d}" / "pseudo"

    def log(self, event, **values):
        """Append one JSON line ``{"event": event, **values}`` to metrics.jsonl."""
        record = {"event": event, **values}
        with open(self.path / "metrics.jsonl", "a") as stream:
            stream.write(json.dumps(record) + "\n")

    def read_log(self, event=None):
        """Records of metrics.jsonl, optionally only those of one event type."""
        log_file = self.path / "metrics.jsonl"
        if not log_file.is_file():
            return []
        records = []
        for line in log_file.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                logger.warning("%s: skipping a truncated line (killed while writing it)", log_file)
        return [r for r in records if event is None or r.get("event") == event]

    def mark_done(self, summary):
        """Write DONE with a final summary (the reproduce driver skips finished runs)."""
        atomic_write_text(self.path / "DONE", json.dumps(summary, indent=1))

    @property
    def done(self):
        return (self.path / "DONE").is_file()

    def read_summary(self):
        """The summary written by :meth:`mark_done`, or None."""
        return read_summary(self.path)


def read_summary(path):
    """The summary a finished run wrote into DONE, or None when it has not finished."""
    done = Path(path) / "DONE"
    return json.loads(done.read_text()) if done.is_file() else None

"""A run folder: resolved config, provenance, JSON-lines metrics, checkpoints, pseudo-labels.

Layout::

    OUT/config.yaml            resolved configuration (the resume check compares against it)
    OUT/run.json               package version, git hash, command line, start time
    OUT/metrics.jsonl          one JSON object per line: losses, lr, mIoU, pseudo-label stats
    OUT/checkpoints/latest.*   the newest consistent state (mid-epoch or end of a round)
    OUT/checkpoints/round_RR.* the state after round RR (source_only.* for source-only runs)
    OUT/round_RR/pseudo/       labels/<name>.png, weak_labels.json, stats.json of round RR
    OUT/DONE                   written when the whole run finished
    OUT/LOCK                   host and PID of the process using the folder (see .lock)
    OUT/attempt_N/             files of a first start that failed before any training step
"""
import datetime
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from .. import __version__
from ..config import ConfigError, config_differences, dump_config, load_config
from ..io import atomic_write_file, atomic_write_text
from .checkpoint import CheckpointError, read_checkpoint
from .lock import LOCK_NAME, RunLock

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


# Options a resumed run may change: they steer only the steps still to come and invalidate
# nothing already computed (checkpoints, pseudo-labels, source statistics, evaluations). The
# learning rate is set again after the trainer states are loaded (they hold the old one).
RESUMABLE_CHANGES = {
    "train.lr": "learning rate of the steps still to come (after a NaN stop: lower it)",
    "source_only.lr": "learning rate of the source-only steps still to come",
    "train.log_every": "logging interval",
    "train.checkpoint_every": "mid-epoch checkpoint interval",
    "eval.enabled": "evaluation after the rounds still to come",
    "eval.flip": "evaluation of the rounds still to come",
    "eval.scales": "evaluation of the rounds still to come",
    "experiment.name": "label in logs and tables",
}


# Sections that only steer training and evaluation: a run that has not trained yet keeps its
# pseudo-labels and statistics when only these change.
_TRAINING_ONLY = ("train.", "rounds.", "source_only.", "eval.")


class RunFolder:
    """Create or reopen the folder of one run, holding its lock until :meth:`close`.

    Parameters
    ----------
    path : str or Path
        The run folder (``--out``).
    config : Config
        The resolved configuration of this invocation.
    resume : bool
        Continue the run already in ``path``. Without it a run that has trained is never
        overwritten; a folder whose first start failed before any training step is started
        again (keeping its step-1 results when only training options changed, else moving them
        to ``attempt_N/``).
    break_lock : bool
        Take over a lock another host left (see :class:`mlsl_gluon.training.lock.RunLock`).

    Raises
    ------
    ConfigError
        When ``path`` holds a run and ``resume`` is False, or holds a run whose config differs
        in options that would invalidate what it computed (``RESUMABLE_CHANGES`` may differ:
        the change is recorded in run.json and metrics.jsonl).
    RunLockedError
        When another live process uses ``path``.
    """

    def __init__(self, path, config, resume=False, break_lock=False):
        self.path = Path(path)
        self.config = config
        self.lock = RunLock(self.path, break_foreign=break_lock).acquire()
        try:
            self._open(resume)
        except BaseException:
            self.close()
            raise

    def _open(self, resume):
        config = self.config
        config_file = self.path / "config.yaml"
        changes = []
        self.resumed = False
        if config_file.is_file() and not self.has_trained:
            previous = load_config(config_file)
            differences = config_differences(previous, config)
            if any(not d.startswith(_TRAINING_ONLY) for d in differences):
                self._set_aside_attempt(previous)
            elif differences:
                changes = differences
            if differences:
                self._write_config()
            logger.info("%s: its first start stopped before any training step; starting it again",
                        self.path)
            self._drop_partial_log_line()
        elif config_file.is_file():
            if not resume:
                raise ConfigError(f"{self.path} already holds a run (config.yaml); pass --resume to continue "
                                  f"it or choose another --out")
            previous = load_config(config_file)
            differences = config_differences(previous, config)
            fixed = [d for d in differences if d.split(":", 1)[0] not in RESUMABLE_CHANGES]
            if fixed:
                raise ConfigError(
                    f"refusing to resume {self.path}: its config.yaml differs from this command's "
                    f"configuration in " + "; ".join(fixed) + ". These options shaped what the run has "
                    "already computed (checkpoints, pseudo-labels, statistics); a resume may change only "
                    + ", ".join(sorted(RESUMABLE_CHANGES)) + ". Use another --out for a new run")
            logger.info("resuming the run in %s", self.path)
            self.resumed = True
            self._drop_partial_log_line()
            if differences:
                changes = differences
                logger.warning("%s: resuming with changed %s", self.path, "; ".join(differences))
                self._write_config()
        else:
            self._write_config()
        self.checkpoint_dir.mkdir(exist_ok=True)
        self._write_provenance(changes)
        if changes:
            self.log("config_changed", changes=changes)

    @property
    def has_trained(self):
        """Whether the run took a training step (or finished): then only ``--resume`` reopens it."""
        if self.done or any(self.checkpoint_dir.glob("round_*.params")):
            return True
        if not self.latest_checkpoint.is_file():
            return False
        try:
            state, _ = read_checkpoint(self.latest_checkpoint)
        except CheckpointError:
            return True  # unknown: let the resume path report the damaged checkpoint
        return bool(state.get("epoch") or state.get("iteration") or state.get("round"))

    def _write_config(self):
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_file(self.path / "config.yaml", lambda name: dump_config(self.config, name))

    def _set_aside_attempt(self, previous):
        """Move what a failed first start with another config wrote into ``attempt_N/``.

        Source statistics stay when the source data settings are the same (they depend on
        nothing else); everything else (partial pseudo-labels and caches) would mix configs.
        """
        number = 1
        while (self.path / f"attempt_{number}").exists():
            number += 1
        aside = self.path / f"attempt_{number}"
        aside.mkdir()
        keep = {"run.json", LOCK_NAME}
        if previous.data == self.config.data and previous.experiment.source == self.config.experiment.source:
            keep.add("source_stats.npz")
        for entry in self.path.iterdir():
            if entry.name not in keep and not entry.name.startswith("attempt_"):
                os.replace(entry, aside / entry.name)
        logger.warning("%s: the failed first start used another config; its files are in %s",
                       self.path, aside)

    def close(self):
        """Release the run folder's lock."""
        self.lock.release()

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

    def _write_provenance(self, changes=()):
        record = {"package": "mlsl-gluon", "version": __version__, "git_hash": git_hash(),
                  "command": sys.argv, "time": datetime.datetime.now(datetime.timezone.utc).isoformat()}
        if changes:
            record["config_changes"] = list(changes)
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

    def drop_records_from(self, stage, epoch, iteration):
        """Remove ``train`` records at or after (stage, epoch, iteration) and ``epoch`` records of
        that epoch or later: a killed run wrote them after its last checkpoint, and the resumed
        run writes them again."""
        log_file = self.path / "metrics.jsonl"
        if not log_file.is_file():
            return 0
        position = (stage, epoch, iteration)
        kept, dropped = [], 0
        for line in log_file.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                dropped += 1
                continue
            at = (record.get("stage"), record.get("epoch"), record.get("iteration", 0))
            later = record.get("event") in ("train", "epoch") and at[0] == stage and (
                at >= position if record["event"] == "train" else at[1] >= epoch)
            if later:
                dropped += 1
            else:
                kept.append(line + "\n")
        if dropped:
            atomic_write_text(log_file, "".join(kept))
            logger.info("%s: dropped %d record(s) written after the checkpoint the run resumes from",
                        log_file, dropped)
        return dropped

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

"""Putting back what a run folder lost, from what it still holds, when a run resumes.

The run holds its folder's lock (:mod:`.lock`), so nothing else is using these files and a
damaged one can be recomputed without asking:

- a round's HDF5 probability cache that no longer opens (truncated by a kill or a full disk) is
  moved aside and recomputed by step 1;
- pseudo-label PNGs (or ``weak_labels.json``) deleted after step 1 finished are rebuilt from the
  cache by pass 2 alone, without the network.
"""
import logging
import os
from pathlib import Path

import h5py

from ..data.common import DatasetError

logger = logging.getLogger(__name__)


def set_aside_damaged_cache(path):
    """Move an HDF5 file that cannot be opened to ``<path>.damaged``; True if it was moved."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        with h5py.File(path, "r"):
            return False
    except OSError as err:
        aside = path.with_name(path.name + ".damaged")
        os.replace(path, aside)
        logger.warning("%s: damaged HDF5 cache (%s) moved to %s; step 1 recomputes it", path, err, aside)
        return True


def missing_pseudo_labels(pseudo_dir, names, with_weak_labels):
    """Files of a finished step 1 that are gone: label PNGs of ``names`` and weak_labels.json."""
    pseudo_dir = Path(pseudo_dir)
    missing = [pseudo_dir / "labels" / f"{name}.png" for name in names
               if not (pseudo_dir / "labels" / f"{name}.png").is_file()]
    if with_weak_labels and not (pseudo_dir / "weak_labels.json").is_file():
        missing.append(pseudo_dir / "weak_labels.json")
    return missing


def rebuild_pseudo_labels(folder, names, *, portion, class_mean_sizes, eta, num_shards=1, progress=True):
    """Rewrite a round's pseudo-labels from its cache when some of them are missing.

    Parameters
    ----------
    folder : RoundFolder
        The round's pseudo-label folder (``labels/``, ``shards/``, the cache).
    names : list of str
        Target image names that must have a label.
    portion, class_mean_sizes, eta
        As step 1 used them.
    num_shards : int
        Number of shards (dist_sync workers) whose caches step 1 wrote.

    Returns
    -------
    list of Path
        The files that were missing (empty when nothing had to be done).

    Raises
    ------
    DatasetError
        When labels are missing and the cache cannot give them back, naming what to run.
    """
    from ..pseudo_labels import CacheError
    from ..pseudo_labels.round import combine_pseudo_label_round

    missing = missing_pseudo_labels(folder.out_dir, names, class_mean_sizes is not None)
    if not missing:
        return []
    logger.warning("%s: %d pseudo-label file(s) missing (first %s); rebuilding them from the cache",
                   folder.out_dir, len(missing), missing[0])
    try:
        combine_pseudo_label_round(folder, portion=portion, num_shards=num_shards,
                                   class_mean_sizes=class_mean_sizes,
                                   eta=eta, progress=progress)
    except (CacheError, FileNotFoundError, OSError) as err:
        round_idx = folder.round_idx
        restart = (f"copy checkpoints/round_{round_idx - 1:02d}.params over checkpoints/latest.params"
                   if round_idx > 0 else "move checkpoints/latest.params aside")
        raise DatasetError(
            f"{missing[0]}: pseudo-label file missing and the round's cache cannot rebuild it ({err}); "
            f"to redo round {round_idx} from its step 1, {restart} in the run folder and resume") from None
    return missing

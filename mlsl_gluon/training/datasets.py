"""Step 2's training set: a seeded source subset plus every pseudo-labelled target image.

Every random choice is a pure function of (seed, stage, epoch, index) so that a run stopped
anywhere and resumed draws exactly the batches and crops an uninterrupted run would have drawn:
the shuffling of an epoch from ``(seed, stage, epoch)``, the augmentation of an item from
``(seed, stage, epoch, item)``, and MXNet's dropout masks from ``(seed, stage, epoch, batch)``.
``stage`` is 0 for source-only training and r + 1 for MLSL round r.
"""
import json
import logging
import math
from pathlib import Path

import mxnet as mx
import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

IGNORE_LABEL = 255


def source_subset(num_source, portion, seed):
    """Indices of the source images trained on with a given source portion (SPEC section 3).

    The subset is a prefix of one seeded permutation of the source set, so each round's subset
    extends the previous one as the portion grows.

    Parameters
    ----------
    num_source : int
        N_src, the size of the source set.
    portion : float
        Share of the source set, e.g. ``0.03 + 0.0025 r``.
    seed : int
        Run seed.

    Returns
    -------
    numpy.ndarray of int
        ``max(1, ceil(portion * N_src))`` sorted indices.
    """
    order = np.random.default_rng([seed, 7]).permutation(num_source)
    size = min(num_source, max(1, math.ceil(portion * num_source - 1e-9)))
    return np.sort(order[:size])


def present_classes(label, num_classes):
    """Image-level label c of a source image: c_i = 1 if class i occurs in its ground truth (Sec. 3.3).

    Returns
    -------
    numpy.ndarray
        float32 (num_classes,) of 0/1.
    """
    label = np.asarray(label)
    valid = label[label < num_classes].astype(np.int64)
    return (np.bincount(valid, minlength=num_classes)[:num_classes] > 0).astype(np.float32)


def item_rng(seed, stage, epoch, index):
    """The augmentation generator of one item in one epoch."""
    return np.random.default_rng([seed, stage, epoch, index])


def epoch_order(num_items, seed, stage, epoch):
    """The shuffled item order of one epoch."""
    return np.random.default_rng([seed, stage, epoch]).permutation(num_items)


def num_batches(num_items, batch_size):
    """Iterations in one epoch (the last batch may be smaller)."""
    return math.ceil(num_items / batch_size)


def read_pseudo_labels(pseudo_dir):
    """Names, label paths and weak-label vectors written by ``run_pseudo_label_round``.

    Raises
    ------
    FileNotFoundError
        When ``weak_labels.json`` or a label PNG is missing (the round's step 1 did not finish).
    """
    pseudo_dir = Path(pseudo_dir)
    weak_file = pseudo_dir / "weak_labels.json"
    try:
        weak = json.loads(weak_file.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{weak_file} missing: the pseudo-label step of this round did not finish") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{weak_file}: not valid JSON ({err})") from None
    return {name: np.asarray(vector, dtype=np.float32) for name, vector in weak.items()}


class SelfTrainingSet:
    """The union of source items (ground truth) and target items (pseudo-labels) of one stage.

    Parameters
    ----------
    source : SegmentationDataset
        Source reader (items ``(image, label, name)``).
    source_indices : sequence of int
        The source subset to use.
    transform : TrainTransform
        Called as ``transform(image, label, rng=rng)`` -> ``(img (3,S,S), label8 (S/8,S/8))``.
    num_classes : int
        C.
    target : SegmentationDataset, optional
        Target reader (labels unused).
    pseudo_dir : str or Path, optional
        Folder holding ``labels/<name>.png`` and ``weak_labels.json`` of this round.
    with_weak_labels : bool
        Also return the image-level label vector (PWL methods).
    per_crop_weak_labels : callable, optional
        Released-code option: ``fn(label8, num_classes) -> (C,)`` computes weak labels from each
        crop's stride-8 label grid instead of the whole image (both domains).
    """

    def __init__(self, source, source_indices, transform, num_classes, target=None, pseudo_dir=None,
                 with_weak_labels=False, per_crop_weak_labels=None):
        self.source, self.target = source, target
        self.transform = transform
        self.num_classes = num_classes
        self.with_weak_labels = with_weak_labels
        self.per_crop_weak_labels = per_crop_weak_labels
        self.items = [("source", int(i)) for i in source_indices]
        self.weak_labels = {}
        if target is not None:
            self.pseudo_dir = Path(pseudo_dir)
            if with_weak_labels and per_crop_weak_labels is None:
                self.weak_labels = read_pseudo_labels(self.pseudo_dir)
                missing = [n for n in target.names if n not in self.weak_labels]
                if missing:
                    raise ValueError(f"{self.pseudo_dir / 'weak_labels.json'} has no entry for "
                                     f"{len(missing)} target images, e.g. {missing[0]!r}")
            self.items += [("target", i) for i in range(len(target))]

    def __len__(self):
        return len(self.items)

    def _raw(self, index):
        """(image, label, image-level label) of one item before augmentation."""
        domain, i = self.items[index]
        if domain == "source":
            image, label, _ = self.source[i]
            return image, label, present_classes(label, self.num_classes)
        image, _, name = self.target[i]
        label_path = self.pseudo_dir / "labels" / f"{name}.png"
        if not label_path.is_file():
            raise FileNotFoundError(f"pseudo-label {label_path} missing for target image {name!r}")
        label = np.array(Image.open(label_path))
        if label.shape != image.shape[:2]:
            raise ValueError(f"pseudo-label {label_path} is {label.shape}, "
                             f"image {name!r} is {image.shape[:2]}")
        return image, label, self.weak_labels.get(name)

    def load(self, index, rng):
        """One augmented item ``(img (3,S,S), label8 (S/8,S/8), weak (C,) or None)``."""
        image, label, weak = self._raw(index)
        img, label8 = self.transform(image, label, rng=rng)
        if not self.with_weak_labels:
            return img, label8, None
        if self.per_crop_weak_labels is not None:
            weak = np.asarray(self.per_crop_weak_labels(label8, self.num_classes), dtype=np.float32)
        return img, label8, weak


class EpochBatches:
    """Batches of one epoch from ``start_iteration`` on, identical whether or not the run resumed.

    Before yielding batch ``it`` the MXNet generator is reseeded from (seed, stage, epoch, it),
    which fixes the dropout masks of that step (the consumer draws them right after).

    Parameters
    ----------
    dataset : SelfTrainingSet
    batch_size : int
        Images per step (per worker with a distributed kvstore).
    seed, stage, epoch : int
        Identify the epoch (see the module docstring).
    start_iteration : int
        First batch to produce (a resumed epoch skips the batches already trained on).
    shard : (int, int)
        ``(rank, num_workers)`` of a ``dist_*`` kvstore: step ``it`` of every worker covers one
        global batch of ``batch_size * num_workers`` items, of which this worker takes its
        slice; the epoch wraps around to its start so that all workers make the same number
        of steps. ``(0, 1)`` is plain single-process training.

    Yields
    ------
    tuple
        ``(images float32 (N,3,S,S), label8 float32 (N,S/8,S/8), weak float32 (N,C) or None)``.
    """

    def __init__(self, dataset, batch_size, *, seed, stage, epoch, start_iteration=0, shard=(0, 1)):
        self.dataset, self.batch_size = dataset, batch_size
        self.seed, self.stage, self.epoch = seed, stage, epoch
        self.start_iteration = start_iteration
        self.rank, self.num_workers = int(shard[0]), int(shard[1])
        if not 0 <= self.rank < self.num_workers:
            raise ValueError(f"shard must be (rank, num_workers) with 0 <= rank < num_workers, got {shard}")
        self.total = num_batches(len(dataset), batch_size * self.num_workers)

    def __len__(self):
        return max(0, self.total - self.start_iteration)

    def _order(self):
        order = epoch_order(len(self.dataset), self.seed, self.stage, self.epoch)
        if self.num_workers == 1:
            return order
        return np.resize(order, self.total * self.batch_size * self.num_workers)  # wraps around

    def steps(self):
        """``(iteration, item indices)`` of every batch from ``start_iteration`` on, in order."""
        order = self._order()
        step = self.batch_size * self.num_workers
        for it in range(self.start_iteration, self.total):
            start = it * step + self.rank * self.batch_size
            yield it, [int(i) for i in order[start:start + self.batch_size]]

    def items(self):
        """The epoch's items as a Gluon-style dataset: item i is augmented with its own generator."""
        return EpochItems(self.dataset, [self.seed, self.stage, self.epoch])

    def seed_step(self, iteration):
        """Reseed MXNet's generator for step ``iteration`` (its dropout masks) of this worker."""
        key = [self.seed, self.stage, self.epoch, iteration, self.rank]
        mx.random.seed(int(np.random.SeedSequence(key).generate_state(1)[0] % (2**31)))

    def __iter__(self):
        items = self.items()
        for it, picked in self.steps():
            batch = stack_items([items[i] for i in picked])
            self.seed_step(it)
            yield batch


class EpochItems:
    """The items of one epoch, indexable like a Gluon dataset: ``items[i]`` is item i augmented
    with the generator of (seed, stage, epoch, i), whichever process or order reads it.

    Parameters
    ----------
    dataset : SelfTrainingSet
    key : list of int
        ``[seed, stage, epoch]``.
    """

    def __init__(self, dataset, key):
        self.dataset, self.key = dataset, list(key)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return self.dataset.load(int(index), item_rng(*self.key, int(index)))


def stack_items(items):
    """One batch from items ``(img, label8, weak or None)``: ``(images, label8, weak or None)``."""
    images = np.stack([item[0] for item in items])
    labels = np.stack([item[1] for item in items])
    weak = np.stack([item[2] for item in items]) if items[0][2] is not None else None
    return images, labels, weak

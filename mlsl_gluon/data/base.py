"""Shared machinery of the dataset readers: finding image/label pairs, list files, transforms.

A reader subclass says where images live, how an image's label path is derived, and how a label
file becomes train ids; everything else (discovery, CBST list files, the missing-label and
missing-root errors, ``.transform``) is here so the three datasets behave alike.
"""
import logging
import os
from collections import namedtuple
from pathlib import Path

from mxnet.gluon.data import Dataset, SimpleDataset

from .common import DatasetError, read_image, read_list_file

logger = logging.getLogger(__name__)

SampleFiles = namedtuple("SampleFiles", ["image", "label", "name"])
SampleFiles.__doc__ = "Files of one sample: image path, label path (or None) and the sample name."


class SegmentationDataset(Dataset):
    """Base of the GTA5, SYNTHIA and Cityscapes readers.

    Item i is ``(image uint8 (H, W, 3) RGB, label uint8 (H, W) train ids or None, name)``.
    Subclasses define ``image_suffix``, ``layout`` (shown in errors), ``_image_dir()``,
    ``_default_label_path(name)`` and ``_read_label(path)``, and may override ``_fit_sizes`` and
    ``_fit_label``.

    Parameters
    ----------
    root : str or os.PathLike
        Dataset root in the dataset's original layout.
    list_file : str or os.PathLike, optional
        CBST-style list (one image path per line, optionally followed by its label path), paths
        relative to the root or to the image folder; default: every image found under the root.
    with_labels : bool
        Whether labels are read (a missing label is then an error).
    """

    image_suffix = ".png"
    layout = ""
    num_classes = 0

    def __init__(self, root, list_file=None, with_labels=True):
        self.root = Path(root)
        self.with_labels = with_labels
        self.image_dir = self._image_dir()
        if not self.image_dir.is_dir():
            raise DatasetError(f"{self.root}: image folder {self.image_dir} not found; expected layout: "
                               f"{self.layout}")
        if list_file is None:
            self.items = self._discover()
        else:
            self.items = self._from_list(Path(list_file))
        if not self.items:
            raise DatasetError(f"{self.root}: no '*{self.image_suffix}' images under {self.image_dir}; "
                               f"expected layout: {self.layout}")
        if with_labels:
            self._check_labels_exist()

    # ----- subclass hooks
    def _image_dir(self):
        raise NotImplementedError

    def _default_label_path(self, name):
        raise NotImplementedError

    def _read_label(self, path):
        raise NotImplementedError

    def _fit_sizes(self, image, label, files):
        """Image and label must have the same size; GTA5 overrides this to resize."""
        if label is not None and label.shape != image.shape[:2]:
            raise DatasetError(
                f"image {files.image} is {image.shape[1]}x{image.shape[0]} but its label {files.label} "
                f"is {label.shape[1]}x{label.shape[0]}; a label must be the image's own label map at "
                f"the image's size (re-extract it, or leave the pair out with a --list-file)")
        return image, label

    # ----- item discovery
    def _name_of(self, image_path):
        rel = Path(os.path.relpath(image_path, self.image_dir)).as_posix()
        if rel.startswith("../") or not rel.endswith(self.image_suffix):
            raise DatasetError(f"{image_path}: not a '*{self.image_suffix}' image under {self.image_dir}")
        return rel[: -len(self.image_suffix)]

    def _discover(self):
        paths = sorted(p for p in self.image_dir.rglob("*" + self.image_suffix) if p.is_file())
        items = []
        for path in paths:
            name = self._name_of(path)
            label = self._default_label_path(name) if self.with_labels else None
            items.append(SampleFiles(path, label, name))
        return items

    def _resolve(self, entry, bases, suffix, list_file, number):
        tried = []
        for base in bases:
            for candidate in (entry, entry + suffix):
                path = base / candidate
                tried.append(str(path))
                if path.is_file():
                    return path
        raise DatasetError(f"{list_file}:{number}: {entry!r} not found; tried {', '.join(tried)}")

    def _from_list(self, list_file):
        items = []
        for number, image_entry, label_entry in read_list_file(list_file):
            image = self._resolve(image_entry, (self.root, self.image_dir), self.image_suffix,
                                  list_file, number)
            name = self._name_of(image)
            label = None
            if self.with_labels:
                label = (self.root / label_entry if label_entry is not None
                         else self._default_label_path(name))
            items.append(SampleFiles(image, label, name))
        logger.info("%s: %d images from list file %s", type(self).__name__, len(items), list_file)
        return items

    def _check_labels_exist(self):
        missing = [f for f in self.items if not f.label.is_file()]
        if missing:
            first = missing[0]
            raise DatasetError(
                f"{len(missing)} of {len(self.items)} images have no label file; first: image "
                f"{first.image} has no label {first.label} (expected layout: {self.layout})")

    # ----- Dataset protocol
    def __len__(self):
        return len(self.items)

    def __getitem__(self, idx):
        files = self.items[idx]
        image = read_image(files.image)
        label = self._read_label(files.label) if files.label is not None else None
        image, label = self._fit_sizes(image, label, files)
        return image, label, files.name

    def read_label(self, idx):
        """Label of item ``idx`` (uint8 (H, W) train ids, as in ``self[idx][1]``) without decoding
        the image, or None for an unlabelled set. For passes over labels only (e.g. Eq. 4)."""
        files = self.items[idx]
        if files.label is None:
            return None
        return self._fit_label(self._read_label(files.label), files)

    def _fit_label(self, label, files):
        """The label as ``__getitem__`` would return it; GTA5 overrides this to resize."""
        return label

    @property
    def names(self):
        """Sample names in item order."""
        return [f.name for f in self.items]

    def transform(self, fn, lazy=True):
        """Dataset of ``fn(image, label)`` for every item (the name is dropped; see ``names``).

        Parameters
        ----------
        fn : callable
            Called as ``fn(image, label)``; its return value is the new item.
        lazy : bool
            As in Gluon: when False, every item is transformed now and kept in memory.
        """
        transformed = TransformedDataset(self, fn)
        if lazy:
            return transformed
        return SimpleDataset([transformed[i] for i in range(len(transformed))])

    def __repr__(self):
        return (f"{type(self).__name__}(root={str(self.root)!r}, {len(self)} images, "
                f"labels={'yes' if self.with_labels else 'no'}, num_classes={self.num_classes})")


class TransformedDataset(Dataset):
    """Lazily applies ``fn(image, label)`` to the items of a ``SegmentationDataset``."""

    def __init__(self, base, fn):
        self.base = base
        self.fn = fn

    def __len__(self):
        return len(self.base)

    def __getitem__(self, idx):
        image, label, _ = self.base[idx]
        return self.fn(image, label)

    @property
    def names(self):
        return self.base.names

    @property
    def num_classes(self):
        return self.base.num_classes

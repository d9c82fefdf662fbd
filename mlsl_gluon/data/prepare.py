"""Dataset preparation: check a dataset folder and write CBST-style list files.

``check_dataset`` walks the folder on its own (it does not stop at the first bad file as the
readers do) and collects every problem: missing folders, images without labels and labels
without images, files that are not PNGs or are truncated (chunk CRCs checked with PIL's
``verify``), label formats other than the dataset's, image/label size mismatches. With
``decode=True`` every pair is also read through the dataset reader.
"""
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from .cityscapes import Cityscapes
from .common import PNG_COLOR_TYPES, DatasetError, png_header, write_list_file
from .gta5 import GTA5, GTA5_SIZE
from .synthia import SYNTHIA

logger = logging.getLogger(__name__)

DATASETS = ("gta5", "synthia", "cityscapes")


@dataclass(frozen=True)
class _Layout:
    image_dir: str  # relative to the root
    image_suffix: str
    label_dir: str
    label_suffix: str
    label_formats: tuple  # accepted (bit depth, PNG colour type)
    expected_label: str  # wording for errors
    labels_optional: bool = False


def _layout(dataset, split):
    if dataset == "gta5":
        return _Layout("images", ".png", "labels", ".png", ((8, 3), (8, 0)),
                       "8-bit palette (indices = label ids) or 8-bit grayscale")
    if dataset == "synthia":
        return _Layout("RGB", ".png", "GT/LABELS", ".png", ((16, 2),), "16-bit RGB (3 channels)")
    if dataset == "cityscapes":
        return _Layout(f"leftImg8bit/{split}", "_leftImg8bit.png", f"gtFine/{split}",
                       "_gtFine_labelIds.png", ((8, 0), (8, 3)), "8-bit grayscale label ids",
                       # val is what `evaluate` scores: its labels are required
                       labels_optional=split != "val")
    raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")


@dataclass
class CheckReport:
    """What ``check_dataset`` found."""

    dataset: str
    root: str
    num_images: int = 0
    num_labels: int = 0
    num_pairs: int = 0
    image_sizes: Counter = field(default_factory=Counter)  # (width, height) -> count
    image_formats: Counter = field(default_factory=Counter)
    label_formats: Counter = field(default_factory=Counter)
    notes: list = field(default_factory=list)  # handled by the readers, worth knowing
    problems: list = field(default_factory=list)  # the readers would fail on these

    @property
    def ok(self):
        return not self.problems

    def summary(self):
        """Multi-line text: counts, sizes, formats, then every note and every problem."""
        lines = [f"{self.dataset} at {self.root}",
                 f"  images: {self.num_images}  labels: {self.num_labels}  "
                 f"image/label pairs: {self.num_pairs}"]
        for title, counter in (("image sizes", self.image_sizes), ("image formats", self.image_formats),
                               ("label formats", self.label_formats)):
            items = ", ".join(f"{_fmt_key(k)}: {n}" for k, n in counter.most_common())
            lines.append(f"  {title}: {items or '-'}")
        lines.append(f"  notes: {len(self.notes)}")
        lines += [f"    NOTE {n}" for n in self.notes]
        lines.append(f"  problems: {len(self.problems)}")
        lines += [f"    PROBLEM {p}" for p in self.problems]
        return "\n".join(lines)


def _fmt_key(key):
    return f"{key[0]}x{key[1]}" if isinstance(key, tuple) else str(key)


def _files(folder, suffix):
    """{name: path} of the files ending in suffix under folder (recursively), name without suffix."""
    found = {}
    for path in folder.rglob("*" + suffix):
        if path.is_file():
            found[path.relative_to(folder).as_posix()[: -len(suffix)]] = path
    return found


def _inspect_png(path, report, what):
    """(width, height, bit_depth, color_type) of a PNG whose CRCs verify, else None (problem recorded).

    An image holding another format under a .png name (e.g. JPEG) is what the reader decodes too
    (OpenCV goes by content): a note, and ``(width, height, 8, 2)``. A label must be PNG: the
    reader refuses anything else, so it is a problem here as well.
    """
    try:
        header = png_header(path)
        with Image.open(path) as im:
            im.verify()
    except DatasetError as err:
        other = _other_format(path) if what == "image" else None
        if other is None:
            report.problems.append(f"{what} {path}: unreadable or truncated PNG ({err})")
            return None
        fmt, size = other
        report.notes.append(f"image {path} holds {fmt} data under a .png name (the reader decodes it)")
        return size + (8, 2)
    except (OSError, SyntaxError, ValueError) as err:
        report.problems.append(f"{what} {path}: unreadable or truncated PNG ({err})")
        return None
    return header


def _other_format(path):
    """(format, (width, height)) of a non-PNG image file that verifies, or None."""
    try:
        with Image.open(path) as im:
            fmt, size = im.format, im.size
            im.load()  # JPEG has no checksum: decoding is the only check
    except (OSError, SyntaxError, ValueError):
        return None
    return fmt, size


def _format_name(bit_depth, color_type):
    name, _ = PNG_COLOR_TYPES.get(color_type, (f"colour type {color_type}", 0))
    return f"{bit_depth}-bit {name}"


def check_dataset(dataset, root, split="train", decode=False, progress=True):
    """Walk a dataset folder and collect counts, sizes, formats and every problem.

    Parameters
    ----------
    dataset : {'gta5', 'synthia', 'cityscapes'}
    root : str or os.PathLike
        Dataset root in the original layout.
    split : str
        Cityscapes split (ignored for the others).
    decode : bool
        Also read every pair through the dataset reader (slow: decodes every pixel); done only
        when the header pass found no problem, since the reader stops at the first one.
    progress : bool
        Show a progress bar.

    Returns
    -------
    CheckReport
    """
    layout = _layout(dataset, split)
    root = Path(root)
    report = CheckReport(dataset, str(root))
    image_dir, label_dir = root / layout.image_dir, root / layout.label_dir
    if not image_dir.is_dir():
        report.problems.append(f"image folder {image_dir} not found (expected ROOT/{layout.image_dir}/"
                               f"...*{layout.image_suffix})")
        return report
    images = _files(image_dir, layout.image_suffix)
    report.num_images = len(images)
    if not images:
        report.problems.append(f"no '*{layout.image_suffix}' images under {image_dir}")
    labels = {}
    if label_dir.is_dir():
        labels = _files(label_dir, layout.label_suffix)
    elif layout.labels_optional:
        report.notes.append(f"no label folder {label_dir}: an unlabelled set (fine for the "
                            "adaptation target)")
    else:
        report.problems.append(f"label folder {label_dir} not found (expected ROOT/{layout.label_dir}/"
                               f"...*{layout.label_suffix})")
    report.num_labels = len(labels)
    if labels:
        for name in sorted(set(images) - set(labels)):
            expected = label_dir / (name + layout.label_suffix)
            report.problems.append(f"image {images[name]} has no label {expected}")
        for name in sorted(set(labels) - set(images)):
            expected = image_dir / (name + layout.image_suffix)
            report.problems.append(f"label {labels[name]} has no image {expected}")

    for name in tqdm(sorted(images), desc=f"check {dataset}", unit="img", disable=not progress):
        image_header = _inspect_png(images[name], report, "image")
        if image_header is not None:
            width, height, depth, ctype = image_header
            report.image_sizes[(width, height)] += 1
            report.image_formats[_format_name(depth, ctype)] += 1
            if (depth, ctype) not in ((8, 2), (8, 6)):
                report.problems.append(f"image {images[name]} is {_format_name(depth, ctype)}; "
                                       "expected 8-bit RGB")
            if dataset == "gta5" and (width, height) != GTA5_SIZE:
                report.notes.append(f"image {images[name]} is {width}x{height}, not 1914x1052 (the reader "
                                    "resizes it)")
        if name not in labels:
            continue
        label_header = _inspect_png(labels[name], report, "label")
        if label_header is None:
            continue
        report.num_pairs += 1
        lwidth, lheight, ldepth, lctype = label_header
        report.label_formats[_format_name(ldepth, lctype)] += 1
        if (ldepth, lctype) not in layout.label_formats:
            report.problems.append(f"label {labels[name]} is {_format_name(ldepth, lctype)}; expected "
                                   f"{layout.expected_label}")
        if image_header is not None and (lwidth, lheight) != image_header[:2]:
            message = (f"label {labels[name]} is {lwidth}x{lheight} but image {images[name]} is "
                       f"{image_header[0]}x{image_header[1]}")
            if dataset == "gta5":
                report.notes.append(message + " (the reader resizes both to 1914x1052)")
            else:
                report.problems.append(message)
    if decode and report.ok:
        _decode_all(dataset, root, split, report, progress)
    return report


def _decode_all(dataset, root, split, report, progress):
    """Read every pair through the reader; record every failure."""
    reader = make_dataset(dataset, root, split=split)
    for idx in tqdm(range(len(reader)), desc=f"decode {dataset}", unit="img", disable=not progress):
        try:
            image, label, _ = reader[idx]
        except (OSError, DatasetError) as err:
            report.problems.append(str(err))
            continue
        if label is not None and np.all(label == 255):
            report.notes.append(f"label {reader.items[idx].label}: every pixel maps to ignore (255)")


def make_dataset(dataset, root, split="train", list_file=None, num_classes=None, with_labels=None):
    """Reader for a dataset name: ``GTA5``, ``SYNTHIA`` or ``Cityscapes`` (split, num_classes,
    with_labels apply to Cityscapes only)."""
    if dataset == "gta5":
        return GTA5(root, list_file=list_file)
    if dataset == "synthia":
        return SYNTHIA(root, list_file=list_file)
    if dataset == "cityscapes":
        return Cityscapes(root, split=split, num_classes=num_classes or 19, list_file=list_file,
                          with_labels=with_labels)
    raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")


def write_dataset_list(dataset, root, out, split="train", with_labels=None, num=None, seed=0):
    """Write a CBST-style list file (paths relative to the root) of a dataset's images.

    Parameters
    ----------
    dataset : {'gta5', 'synthia', 'cityscapes'}
    root : str or os.PathLike
    out : str or os.PathLike
        List file to write.
    split : str
        Cityscapes split.
    with_labels : bool or None
        Write ``image<TAB>label`` lines (None: when the dataset has labels).
    num : int, optional
        Keep a seeded random subset of this many images (in name order).
    seed : int
        Seed of the subset.

    Returns
    -------
    int
        Number of lines written.
    """
    reader = make_dataset(dataset, root, split=split, with_labels=with_labels)
    items = reader.items
    if num is not None:
        if not 0 < num <= len(items):
            raise ValueError(f"num must be in 1..{len(items)}, got {num}")
        keep = np.sort(np.random.default_rng(seed).choice(len(items), size=num, replace=False))
        items = [items[i] for i in keep]
    root = Path(root)

    def rel(path):
        return Path(os.path.relpath(path, root)).as_posix()

    count = write_list_file(out, ((rel(f.image), None if f.label is None else rel(f.label)) for f in items))
    logger.info("wrote %d entries to %s", count, out)
    return count

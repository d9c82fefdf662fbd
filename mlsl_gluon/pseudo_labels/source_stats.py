"""Source-domain statistics read by the pseudo-label step: Eq. 4 class sizes and the spatial prior.

Both come from one streaming pass over the source labels (:class:`SourceStatistics`); memory is
C + C * gh * gw counters whatever the number of images. They are stored together in one .npz
file (:func:`save_source_stats` / :func:`load_source_stats`).

Spatial prior (CBST-SP). How CBST computed its released prior file is not public; here, for
every cell (y, x) of a gh x gw grid spanning the image (pixels are assigned to cells by their
relative position, so sources of any size share the grid), n_c(y, x) counts source pixels of
class c and n(y, x) all labelled (non-255) pixels. The prior is the additively (Laplace)
smoothed class frequency

    prior_c(y, x) = (n_c(y, x) + alpha) / (n(y, x) + C * alpha),    alpha = 1 by default,

so no class is ever ruled out at a location (a zero prior would forbid a label there forever),
and cells with many labelled pixels are barely changed. No spatial blur is applied; the prior
is resized bilinearly to the target image when used.
"""
import logging
import os

import numpy as np
from tqdm import tqdm

from ..io import atomic_write_bytes, npz_bytes
from .selection import IGNORE_LABEL

logger = logging.getLogger(__name__)

SMOOTHING = "additive"
STATS_VERSION = 1


def _check_label(label, num_classes):
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"label maps must be (H, W), got shape {label.shape}")
    bad = (label >= num_classes) & (label != IGNORE_LABEL)
    if bad.any():
        raise ValueError(f"label map holds ids {np.unique(label[bad]).tolist()} outside "
                         f"[0, {num_classes}) and != 255")
    return label


class SourceStatistics:
    """Streaming Eq. 4 class sizes and spatial-prior counts over source label maps.

    Parameters
    ----------
    num_classes : int
        C.
    grid : (int, int)
        (gh, gw) cells of the spatial prior.
    """

    def __init__(self, num_classes, grid=(64, 128)):
        self.num_classes = int(num_classes)
        self.grid = (int(grid[0]), int(grid[1]))
        self.size_sum = np.zeros(self.num_classes, dtype=np.float64)
        self.images_with_class = np.zeros(self.num_classes, dtype=np.int64)
        self.num_images = 0
        self.class_cell_counts = np.zeros((self.num_classes,) + self.grid, dtype=np.int64)
        self.cell_counts = np.zeros(self.grid, dtype=np.int64)

    def update(self, label):
        """Add one (H, W) train-id label map (255 = ignore)."""
        label = _check_label(label, self.num_classes)
        height, width = label.shape
        counts = np.bincount(label.ravel(), minlength=256)[:self.num_classes]
        present = counts > 0
        self.size_sum[present] += counts[present] / float(height * width)
        self.images_with_class += present
        self.num_images += 1
        gh, gw = self.grid
        rows = (np.arange(height) * gh // height)[:, None]
        cols = (np.arange(width) * gw // width)[None, :]
        cell = (rows * gw + cols).ravel()
        flat = label.ravel().astype(np.int64)
        keep = flat != IGNORE_LABEL
        by_class = np.bincount(flat[keep] * (gh * gw) + cell[keep],
                               minlength=self.num_classes * gh * gw)
        self.class_cell_counts += by_class.reshape(self.class_cell_counts.shape)
        self.cell_counts += by_class.reshape(self.num_classes, gh, gw).sum(axis=0)

    def class_mean_sizes(self):
        """m_i of Eq. 4 (0 for a class that never occurs)."""
        return np.divide(self.size_sum, self.images_with_class,
                         out=np.zeros(self.num_classes), where=self.images_with_class > 0)

    def spatial_prior(self, alpha=1.0):
        """(C, gh, gw) float32 additively smoothed class frequency (module docstring)."""
        return spatial_prior_from_counts(self.class_cell_counts, alpha)


def class_mean_sizes(labels, num_classes):
    """Eq. 4: mean relative size of each class over the source images that contain it.

    m_i = (1 / N_i) * sum_j 1_i^j * |{pixels of class i in image j}| / (H_j * W_j), with N_i
    the number of images containing class i (paper Sec. 3.3.1).

    Parameters
    ----------
    labels : iterable of ndarray
        (H, W) train-id label maps (255 = ignore, counted in H * W), read one at a time.
    num_classes : int
        C.

    Returns
    -------
    ndarray
        (C,) float64; 0 for a class that occurs in no image (so any pixel of it in a target
        pseudo-label switches its weak label on, see :func:`pseudo_weak_labels`).
    """
    stats = SourceStatistics(num_classes, grid=(1, 1))
    for label in labels:
        stats.update(label)
    return stats.class_mean_sizes()


def spatial_prior_from_counts(class_cell_counts, alpha=1.0):
    """prior_c = (n_c + alpha) / (n + C * alpha) per grid cell (CBST-SP, additive smoothing).

    Parameters
    ----------
    class_cell_counts : ndarray
        (C, gh, gw) labelled source pixels of each class per cell.
    alpha : float
        Additive smoothing; > 0 keeps every class possible everywhere.

    Returns
    -------
    ndarray
        (C, gh, gw) float32, summing to 1 over classes in every cell.
    """
    counts = np.asarray(class_cell_counts, dtype=np.float64)
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    total = counts.sum(axis=0, keepdims=True) + counts.shape[0] * alpha
    prior = np.divide(counts + alpha, total, out=np.full_like(counts, 1.0 / counts.shape[0]),
                      where=total > 0)
    return prior.astype(np.float32)


def spatial_prior(labels, num_classes, grid=(64, 128), alpha=1.0):
    """CBST spatial prior from source label maps (see the module docstring for the smoothing).

    Parameters
    ----------
    labels : iterable of ndarray
        (H, W) train-id maps, any sizes.
    num_classes : int
        C.
    grid : (int, int)
        (gh, gw) cells.
    alpha : float
        Additive smoothing.

    Returns
    -------
    ndarray
        (C, gh, gw) float32.
    """
    stats = SourceStatistics(num_classes, grid)
    for label in labels:
        stats.update(label)
    return stats.spatial_prior(alpha)


def save_source_stats(path, class_mean_sizes, spatial_prior, *, num_classes, grid, alpha,
                      num_images, source=""):
    """Write Eq. 4 class sizes and the spatial prior to one .npz file, atomically.

    Parameters
    ----------
    path : str
        Output file (.npz).
    class_mean_sizes : ndarray
        (C,) m_i.
    spatial_prior : ndarray
        (C, gh, gw).
    num_classes, grid, alpha, num_images, source
        Recorded in the file (grid as (gh, gw); smoothing is 'additive' with this alpha).
    """
    sizes = np.asarray(class_mean_sizes, dtype=np.float64)
    prior = np.asarray(spatial_prior, dtype=np.float32)
    if sizes.shape != (num_classes,) or prior.shape != (num_classes,) + tuple(grid):
        raise ValueError(f"shapes {sizes.shape}, {prior.shape} do not match num_classes={num_classes}, "
                         f"grid={tuple(grid)}")
    atomic_write_bytes(path, npz_bytes(
        version=np.int64(STATS_VERSION), class_mean_sizes=sizes, spatial_prior=prior,
        num_classes=np.int64(num_classes), grid=np.asarray(grid, dtype=np.int64),
        smoothing=np.str_(SMOOTHING), alpha=np.float64(alpha), num_images=np.int64(num_images),
        source=np.str_(source)))


def write_source_stats(path, dataset, *, grid=(64, 128), alpha=1.0, desc="source statistics", progress=True):
    """One streaming pass over a source dataset's labels, saved with :func:`save_source_stats`.

    Parameters
    ----------
    path : str
        Output .npz.
    dataset : GTA5 or SYNTHIA
        Has ``num_classes``, ``root``, ``len()`` and ``read_label(i)`` (labels only, no images).
    grid, alpha
        Spatial-prior cells (gh, gw) and additive smoothing.
    desc : str
        Progress-bar label.
    progress : bool
        Show the progress bar.

    Returns
    -------
    SourceStatistics
        The counts (``class_mean_sizes()``, ``grid``, ``num_images``).
    """
    counter = SourceStatistics(dataset.num_classes, grid)
    for i in tqdm(range(len(dataset)), desc=desc, unit="img", leave=False, disable=not progress):
        counter.update(dataset.read_label(i))
    save_source_stats(str(path), counter.class_mean_sizes(), counter.spatial_prior(alpha),
                      num_classes=dataset.num_classes, grid=counter.grid, alpha=alpha,
                      num_images=counter.num_images, source=str(dataset.root))
    return counter


def load_source_stats(path):
    """Read a file written by :func:`save_source_stats`.

    Returns
    -------
    dict
        class_mean_sizes (C,), spatial_prior (C, gh, gw), num_classes, grid, smoothing, alpha,
        num_images, source.

    Raises
    ------
    ValueError
        Naming the file, when it is missing, not an .npz, lacks a field or is inconsistent.
    """
    if not os.path.isfile(path):
        raise ValueError(f"{path}: source statistics file not found (make it with `mlsl-gluon stats`)")
    fields = ("version", "class_mean_sizes", "spatial_prior", "num_classes", "grid", "smoothing",
              "alpha", "num_images", "source")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, EOFError, ValueError) as err:
        raise ValueError(f"{path}: unreadable source statistics file ({err})") from err
    if not hasattr(data, "files"):  # a bare .npy array, not an .npz archive
        raise ValueError(f"{path}: not a source statistics file (a single array, expected an .npz)")
    with data:
        missing = [f for f in fields if f not in data.files]
        if missing:
            raise ValueError(f"{path}: not a source statistics file, missing fields {missing}")
        out = {f: data[f] for f in fields}
    num_classes = int(out["num_classes"])
    grid = tuple(int(g) for g in out["grid"])
    if out["class_mean_sizes"].shape != (num_classes,) or out["spatial_prior"].shape != (num_classes,) + grid:
        raise ValueError(f"{path}: array shapes {out['class_mean_sizes'].shape}, "
                         f"{out['spatial_prior'].shape} disagree with num_classes={num_classes}, grid={grid}")
    return {"class_mean_sizes": out["class_mean_sizes"], "spatial_prior": out["spatial_prior"],
            "num_classes": num_classes, "grid": grid, "smoothing": str(out["smoothing"]),
            "alpha": float(out["alpha"]), "num_images": int(out["num_images"]),
            "source": str(out["source"]), "version": int(out["version"])}

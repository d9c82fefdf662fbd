"""GTA5 ("Playing for Data", Richter et al. 2016) reader: the source set of GTA5 -> Cityscapes."""
from . import classes
from .base import SegmentationDataset
from .common import map_ids, png_header, read_label_ids, resize_pair

# (width, height) of almost every GTA5 frame; the few others are resized to it (SPEC section 2).
GTA5_SIZE = (1914, 1052)


class GTA5(SegmentationDataset):
    """GTA5 in its original layout, labels mapped to the 19 Cityscapes train ids.

    Labels are palette PNGs whose indices are Cityscapes label ids; the indices are read and
    mapped with ``classes.LABEL_ID_TO_TRAIN_ID`` (the palette is never used). A frame whose image
    or label is not 1914x1052 is resized to it (image bilinear, label nearest) with a logged
    warning, never an error.

    Parameters
    ----------
    root : str or os.PathLike
        Folder holding ``images/NNNNN.png`` and ``labels/NNNNN.png``.
    list_file : str or os.PathLike, optional
        CBST-style list (e.g. ``images/00001.png<TAB>labels/00001.png`` per line).
    frame_size : tuple of int or None
        (width, height) every frame is brought to; default the GTA5 size 1914x1052. None keeps
        each frame's own size (for data written in the GTA5 format at another size, e.g. the
        demo); a label whose size differs from its image is then resized to the image.

    Examples
    --------
    >>> image, label, name = GTA5("/data/gta5")[0]   # doctest: +SKIP
    >>> image.shape, label.shape, name                # doctest: +SKIP
    ((1052, 1914, 3), (1052, 1914), '00001')
    """

    layout = "ROOT/images/NNNNN.png (RGB frames) and ROOT/labels/NNNNN.png (palette PNG, indices = label ids)"
    num_classes = 19

    def __init__(self, root, list_file=None, frame_size=GTA5_SIZE):
        self.frame_size = None if frame_size is None else (int(frame_size[0]), int(frame_size[1]))
        super().__init__(root, list_file=list_file, with_labels=True)

    def _image_dir(self):
        return self.root / "images"

    def _default_label_path(self, name):
        return self.root / "labels" / (name + ".png")

    def _read_label(self, path):
        return map_ids(read_label_ids(path), classes.LABEL_ID_TO_TRAIN_ID)

    def _fit_label(self, label, files):
        # Only the image header is read: the label's target size without decoding the image.
        size = self.frame_size or png_header(files.image)[:2]
        return resize_pair(None, label, size, source=f"GTA5 frame {files.name}")[1]

    def _fit_sizes(self, image, label, files):
        size = self.frame_size or (image.shape[1], image.shape[0])
        return resize_pair(image, label, size, source=f"GTA5 frame {files.name}")

"""The demo's synthetic two-domain street scenes: determinism, real formats, classes, domain shift."""
import hashlib
import inspect

import cv2
import numpy as np
import pytest
from PIL import Image

from mlsl_gluon.data.cityscapes import Cityscapes
from mlsl_gluon.data.classes import (
    CITYSCAPES_19_NAMES,
    LABEL_ID_TO_TRAIN_ID,
    SYNTHIA_16_NAMES,
    TRAIN19_TO_TRAIN16,
)
from mlsl_gluon.data.gta5 import GTA5
from mlsl_gluon.data.synthia import SYNTHIA
from mlsl_gluon.demo.synthetic import VAL_CITY, generate_demo_data, make_frame, read_target_truth

SIZE = (96, 192)
REQUIRED = ("road", "sidewalk", "building", "vegetation", "sky", "pole", "traffic sign", "person", "car")


def _tree_digest(root):
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def gta_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo_gta")
    return root, generate_demo_data(root, seed=3, n_source=6, n_target_train=4, n_target_val=3, size=SIZE)


def _gta5_reader(root):
    # The GTA5 reader resizes frames to 1914x1052 unless told to keep the native size.
    if "frame_size" in inspect.signature(GTA5.__init__).parameters:
        return GTA5(root, frame_size=None)
    return GTA5(root)


def test_same_seed_same_bytes_other_seed_other_bytes(gta_data, tmp_path):
    root, _ = gta_data
    counts = dict(n_source=6, n_target_train=4, n_target_val=3, size=SIZE)
    again = generate_demo_data(tmp_path / "a", seed=3, **counts)
    other = generate_demo_data(tmp_path / "b", seed=4, **counts)
    assert _tree_digest(root) == _tree_digest(again["gta5"].parent)
    assert _tree_digest(root) != _tree_digest(other["gta5"].parent)


def test_layout_and_no_target_train_labels(gta_data):
    root, roots = gta_data
    assert roots == {"gta5": root / "GTA5", "cityscapes": root / "Cityscapes"}
    images = sorted(p.name for p in (root / "GTA5" / "images").iterdir())
    assert images == [f"{i:05d}.png" for i in range(1, 7)]
    assert len(list((root / "Cityscapes" / "leftImg8bit" / "train").rglob("*_leftImg8bit.png"))) == 4
    assert not (root / "Cityscapes" / "gtFine" / "train").exists()
    val_labels = sorted((root / "Cityscapes" / "gtFine" / "val" / VAL_CITY).iterdir())
    expected = [f"{VAL_CITY}_000000_{i:06d}_gtFine_labelIds.png" for i in range(3)]
    assert [p.name for p in val_labels] == expected
    with Image.open(val_labels[0]) as img:
        assert img.mode == "L" and img.size == (SIZE[1], SIZE[0])
    with Image.open(root / "GTA5" / "labels" / "00001.png") as img:
        assert img.mode == "P"
        assert img.getpalette()[7 * 3: 8 * 3] == [128, 64, 128]  # road's Cityscapes colour at index 7


def test_gta5_reads_back_with_label_ids(gta_data):
    root, roots = gta_data
    ds = _gta5_reader(roots["gta5"])
    assert len(ds) == 6
    image, label, name = ds[0]
    assert name == "00001"
    _, label_ids, _ = make_frame(3, "source", 0, "source", SIZE)
    expected = LABEL_ID_TO_TRAIN_ID[label_ids]
    assert set(np.unique(label)) == set(np.unique(expected))
    if label.shape == expected.shape:
        np.testing.assert_array_equal(label, expected)
    raw = np.array(Image.open(root / "GTA5" / "labels" / "00001.png"))
    np.testing.assert_array_equal(raw, label_ids)


def test_cityscapes_reads_back(gta_data):
    _, roots = gta_data
    train = Cityscapes(roots["cityscapes"], split="train")
    assert len(train) == 4 and train[0][1] is None
    val = Cityscapes(roots["cityscapes"], split="val")
    image, label, name = val[1]
    assert name == f"{VAL_CITY}/{VAL_CITY}_000000_000001"
    assert image.shape == SIZE + (3,) and image.dtype == np.uint8
    expected_image, label_ids, _ = make_frame(3, "target_val", 1, "target", SIZE)
    np.testing.assert_array_equal(image, expected_image)
    np.testing.assert_array_equal(label, LABEL_ID_TO_TRAIN_ID[label_ids])
    assert (label == 255).any(), "the ego-vehicle bonnet should be void, as in Cityscapes"


def test_synthia_format_reads_back(tmp_path):
    roots = generate_demo_data(tmp_path, seed=1, n_source=3, n_target_train=1, n_target_val=1, size=SIZE,
                               source_format="synthia")
    path = roots["synthia"] / "GT" / "LABELS" / "0000000.png"
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw.shape == SIZE + (3,)
    assert set(np.unique(raw[..., 2])) <= {1, 2, 3, 4, 6, 7, 8, 9, 10, 16}
    assert (raw[..., 1] > 0).any() and not raw[..., 0].any()
    image, label, name = SYNTHIA(roots["synthia"])[0]
    assert name == "0000000" and image.shape == SIZE + (3,)
    _, label_ids, _ = make_frame(1, "source", 0, "source", SIZE)
    np.testing.assert_array_equal(label, TRAIN19_TO_TRAIN16[LABEL_ID_TO_TRAIN_ID[label_ids]])
    present = {SYNTHIA_16_NAMES[c] for c in np.unique(label) if c < 16}
    assert {"road", "sky", "building", "car"} <= present


def _class_stats(domain, stream, frames=24):
    """Per-class pixel counts and mean colours over some frames of one domain."""
    counts, sums = np.zeros(19), np.zeros((19, 3))
    for i in range(frames):
        image, label_ids, _ = make_frame(0, stream, i, domain, SIZE)
        train = LABEL_ID_TO_TRAIN_ID[label_ids]
        for c in np.unique(train[train < 19]):
            sel = train == c
            counts[c] += sel.sum()
            sums[c] += image[sel].sum(axis=0)
    return counts, sums / np.maximum(counts, 1)[:, None]


def test_required_classes_present_and_shift_is_real():
    src_counts, src_mean = _class_stats("source", "source")
    tgt_counts, tgt_mean = _class_stats("target", "target_val")
    for name in REQUIRED:
        c = CITYSCAPES_19_NAMES.index(name)
        assert src_counts[c] > 0 and tgt_counts[c] > 0, name
    # Thin and small things are small: poles, signs and persons each under 5 % of pixels.
    for name in ("pole", "traffic sign", "person"):
        c = CITYSCAPES_19_NAMES.index(name)
        assert tgt_counts[c] / tgt_counts.sum() < 0.05, name
    # The appearance moves: every stuff class's mean colour differs by > 25 (of 255) between domains.
    for name in ("road", "sidewalk", "building", "vegetation", "sky"):
        c = CITYSCAPES_19_NAMES.index(name)
        assert np.linalg.norm(src_mean[c] - tgt_mean[c]) > 25, name
    # Within the target, stuff classes stay distinguishable by colour.
    stuff = [CITYSCAPES_19_NAMES.index(n) for n in ("road", "sidewalk", "building", "vegetation", "sky")]
    for a in stuff:
        for b in stuff:
            if a < b:
                assert np.linalg.norm(tgt_mean[a] - tgt_mean[b]) > 15, (a, b)
    # The camera differs too: the horizon (top of the road) sits higher in target frames.
    road = CITYSCAPES_19_NAMES.index("road")

    def road_top(domain, stream):
        tops = []
        for i in range(12):
            train = LABEL_ID_TO_TRAIN_ID[make_frame(0, stream, i, domain, SIZE)[1]]
            tops.append(np.nonzero((train == road).any(axis=1))[0].min())
        return np.mean(tops)

    assert road_top("target", "target_val") < road_top("source", "source") - 3


def test_target_has_sensor_noise_and_source_is_clean():
    """Sky has no texture in either domain: any pixel-to-pixel change along a row is sensor noise."""

    def sky_row_noise(stream, domain):
        image, label_ids, _ = make_frame(0, stream, 0, domain, SIZE)
        sky = LABEL_ID_TO_TRAIN_ID[label_ids] == CITYSCAPES_19_NAMES.index("sky")
        inside = sky[:, 2:] & sky[:, 1:-1] & sky[:, :-2]  # away from edges
        diff = np.abs(np.diff(image.astype(float), axis=1))[:, 1:]
        return diff[inside].mean()

    assert sky_row_noise("source", "source") < 0.5
    assert sky_row_noise("target_val", "target") > 1.5


def test_bad_arguments_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="source_format"):
        generate_demo_data(tmp_path, source_format="cityscapes")
    with pytest.raises(ValueError, match="n_source"):
        generate_demo_data(tmp_path, n_source=0)
    with pytest.raises(ValueError, match="size"):
        generate_demo_data(tmp_path, size=(8, 8))


def test_target_train_truth_goes_beside_the_data_root_only(tmp_path):
    roots = generate_demo_data(tmp_path / "data", seed=2, n_source=1, n_target_train=2, n_target_val=1,
                               size=SIZE, truth_root=tmp_path / "truth")
    assert roots["truth"] == tmp_path / "truth"
    assert not list((tmp_path / "data").rglob("*train*/*labelIds.png"))
    name = Cityscapes(roots["cityscapes"], split="train").names[1]
    _, label_ids, _ = make_frame(2, "target_train", 1, "target", SIZE)
    np.testing.assert_array_equal(read_target_truth(roots["truth"], name), LABEL_ID_TO_TRAIN_ID[label_ids])
    with pytest.raises(ValueError, match="inside the data root"):
        generate_demo_data(tmp_path / "data", n_source=1, n_target_train=1, n_target_val=1, size=SIZE,
                           truth_root=tmp_path / "data" / "truth")

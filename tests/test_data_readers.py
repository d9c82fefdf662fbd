"""Dataset readers on the real sample files and on small fixtures in the exact formats."""
import logging

import numpy as np
import pytest
from PIL import Image
from test_data_helpers import (
    gta5_label_ids,
    make_cityscapes,
    make_gta5,
    make_synthia,
    random_rgb,
    save_palette_label,
    save_rgb,
    save_synthia_label,
    synthia_class_ids,
    truncate,
)

from mlsl_gluon.data import (
    GTA5,
    SYNTHIA,
    Cityscapes,
    DatasetError,
    classes,
    read_label_ids,
    read_label_synthia,
)

CS_FRAME = "aachen/aachen_000000_000019"


# ----- real files

def test_gta5_real_label_sky_top_road_bottom(real_samples):
    ds = GTA5(real_samples / "gta5")
    assert len(ds) == 1 and ds.num_classes == 19
    image, label, name = ds[0]
    assert name == "00005"
    assert image.shape == (1052, 1914, 3) and image.dtype == np.uint8
    assert label.shape == (1052, 1914) and label.dtype == np.uint8
    rows = np.arange(label.shape[0])[:, None].repeat(label.shape[1], 1)
    sky, road = label == 10, label == 0
    assert sky.mean() == pytest.approx(0.208, abs=0.005)
    assert road.mean() == pytest.approx(0.422, abs=0.005)
    assert rows[sky].mean() < 0.3 * label.shape[0]
    assert rows[road].mean() > 0.6 * label.shape[0]
    assert (rows[sky] < label.shape[0] // 2).mean() > 0.95
    assert (rows[road] >= label.shape[0] // 2).mean() > 0.9
    assert set(np.unique(label)) <= set(range(19)) | {255}


def test_gta5_real_label_as_rgb_is_rejected(real_samples, tmp_path):
    """The palette rendering of the same label (what convert('RGB') gives) must not be accepted."""
    root = tmp_path / "gta5"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "images" / "00005.png").symlink_to(real_samples / "gta5" / "images" / "00005.png")
    palette_label = Image.open(real_samples / "gta5" / "labels" / "00005.png")
    palette_label.convert("RGB").save(root / "labels" / "00005.png")
    with pytest.raises(DatasetError) as err:
        GTA5(root)[0]
    message = str(err.value)
    assert "00005.png" in message and "RGB" in message and "palette" in message


def test_cityscapes_real_label_ids_agree_with_train_ids(real_samples):
    ds = Cityscapes(real_samples / "cityscapes", split="train")
    assert ds.with_labels and ds.num_classes == 19
    image, label, name = ds[0]
    assert name == CS_FRAME
    assert image.shape == (1024, 2048, 3) and label.shape == (1024, 2048) and label.dtype == np.uint8
    ref = np.array(Image.open(real_samples / "cityscapes" / "gtFine" / "train" / "aachen"
                              / "aachen_000000_000019_gtFine_labelTrainIds.png"))
    assert (label == ref).mean() >= 0.99


def test_cityscapes_real_16_classes(real_samples):
    label19 = Cityscapes(real_samples / "cityscapes")[0][1]
    ds16 = Cityscapes(real_samples / "cityscapes", num_classes=16)
    label16 = ds16[0][1]
    assert ds16.num_classes == 16
    assert set(np.unique(label16)) <= set(range(16)) | {255}
    np.testing.assert_array_equal(ds16.read_label(0), label16)
    np.testing.assert_array_equal(label16, classes.TRAIN19_TO_TRAIN16[label19])
    assert np.all(label16[label19 == 9] == 255)  # terrain is not one of the 16 classes
    assert np.all(label16[label19 == 0] == 0)  # road stays road
    assert np.all(label16[label19 == 10] == 9)  # sky: 19-class id 10 -> 16-class id 9


def test_cityscapes_real_without_gtfine(real_samples, tmp_path):
    root = tmp_path / "cs"
    root.mkdir()
    (root / "leftImg8bit").symlink_to(real_samples / "cityscapes" / "leftImg8bit")
    ds = Cityscapes(root)
    assert not ds.with_labels
    image, label, name = ds[0]
    assert label is None and name == CS_FRAME and image.shape == (1024, 2048, 3)
    assert ds.read_label(0) is None
    with pytest.raises(DatasetError, match="gtFine"):
        Cityscapes(root, with_labels=True)
    # a list file that names the labels turns them on without gtFine/ in the root
    lst = tmp_path / "pairs.lst"
    lst.write_text("leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png\t"
                   f"{real_samples}/cityscapes/gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png\n")
    assert Cityscapes(root, list_file=lst)[0][1].shape == (1024, 2048)
    # labels present but not wanted
    assert Cityscapes(real_samples / "cityscapes", with_labels=False)[0][1] is None


def test_cityscapes_list_with_train_id_labels(real_samples, tmp_path):
    """A CBST list may name *_labelTrainIds.png: those are read as train ids, not remapped."""
    lst = tmp_path / "train.lst"
    lst.write_text("leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png\t"
                   "gtFine/train/aachen/aachen_000000_000019_gtFine_labelTrainIds.png\n")
    label = Cityscapes(real_samples / "cityscapes", list_file=lst)[0][1]
    ref = np.array(Image.open(real_samples / "cityscapes" / "gtFine" / "train" / "aachen"
                              / "aachen_000000_000019_gtFine_labelTrainIds.png"))
    np.testing.assert_array_equal(label, ref)


# ----- list files

def test_list_file_entries_order_and_forms(tmp_path):
    root = make_gta5(tmp_path / "gta5", count=4)
    lst = tmp_path / "sub.lst"
    lst.write_text("# subset\nimages/00003.png\tlabels/00003.png\n\n00001.png\n00004\n")
    ds = GTA5(root, list_file=lst)
    assert ds.names == ["00003", "00001", "00004"]
    assert ds.items[1].label == root / "labels" / "00001.png"


def test_list_file_bad_entry_names_file_and_line(tmp_path):
    root = make_gta5(tmp_path / "gta5", count=1)
    lst = tmp_path / "bad.lst"
    lst.write_text("images/00001.png\nimages/00099.png\n")
    with pytest.raises(DatasetError, match=r"bad\.lst:2: 'images/00099\.png' not found"):
        GTA5(root, list_file=lst)
    lst.write_text("a b c\n")
    with pytest.raises(DatasetError, match=r"bad\.lst:1"):
        GTA5(root, list_file=lst)


def test_cityscapes_list_subset_by_name(tmp_path):
    root = make_cityscapes(tmp_path / "cs")
    lst = tmp_path / "cs.lst"
    lst.write_text("bremen/bremen_000001_000019\nleftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png\n")
    ds = Cityscapes(root, list_file=lst)
    assert ds.names == ["bremen/bremen_000001_000019", "aachen/aachen_000000_000019"]
    assert ds[0][1].shape == (32, 64)


# ----- bad input

@pytest.mark.parametrize("reader, layout_hint", [(GTA5, "images/"), (SYNTHIA, "GT/LABELS"),
                                                 (Cityscapes, "leftImg8bit/train")])
def test_missing_or_empty_root_names_layout(tmp_path, reader, layout_hint):
    with pytest.raises(DatasetError) as err:
        reader(tmp_path / "nowhere")
    assert "nowhere" in str(err.value) and layout_hint in str(err.value)
    for sub in ("images", "RGB", "leftImg8bit/train"):
        (tmp_path / "empty" / sub).mkdir(parents=True)
    with pytest.raises(DatasetError) as err:
        reader(tmp_path / "empty")
    assert "no '*" in str(err.value) and layout_hint in str(err.value)


def test_image_without_label_names_both_paths(tmp_path):
    root = make_gta5(tmp_path / "gta5", count=2)
    (root / "labels" / "00002.png").unlink()
    with pytest.raises(DatasetError) as err:
        GTA5(root)
    assert str(root / "images" / "00002.png") in str(err.value)
    assert str(root / "labels" / "00002.png") in str(err.value)


def test_cityscapes_image_without_label(tmp_path):
    root = make_cityscapes(tmp_path / "cs")
    missing = root / "gtFine" / "train" / "bremen" / "bremen_000001_000019_gtFine_labelIds.png"
    missing.unlink()
    with pytest.raises(DatasetError) as err:
        Cityscapes(root)
    assert str(missing) in str(err.value) and "bremen_000001_000019_leftImg8bit.png" in str(err.value)


def test_gta5_odd_size_frame_is_resized_with_note(tmp_path, caplog):
    root = tmp_path / "gta5"
    # frame 1: both image and label at another size; frame 2: only the label differs.
    # Flat images: random pixels would make these large PNGs slow to write.
    save_rgb(root / "images" / "00001.png", np.full((1046, 1900, 3), 90, np.uint8))
    save_palette_label(root / "labels" / "00001.png", gta5_label_ids(1046, 1900))
    save_rgb(root / "images" / "00002.png", np.full((1052, 1914, 3), 90, np.uint8))
    save_palette_label(root / "labels" / "00002.png", gta5_label_ids(526, 957))
    ds = GTA5(root)
    with caplog.at_level(logging.WARNING, logger="mlsl_gluon.data"):
        for idx, name in enumerate(("00001", "00002")):
            image, label, got_name = ds[idx]
            assert got_name == name
            assert image.shape == (1052, 1914, 3) and label.shape == (1052, 1914)
            # nearest: no new label values appear
            assert set(np.unique(label)) == {0, 2, 10, 255}
            np.testing.assert_array_equal(ds.read_label(idx), label)
    assert "00001" in caplog.text and "1900x1046" in caplog.text and "957x526" in caplog.text


def test_gta5_format_at_own_size(tmp_path):
    """frame_size=None keeps small GTA5-format frames (the demo data) at their size."""
    root = make_gta5(tmp_path / "gta5", count=2, size=(64, 40))
    save_palette_label(root / "labels" / "00002.png", gta5_label_ids(20, 32))
    ds = GTA5(root, frame_size=None)
    assert ds[0][0].shape == (40, 64, 3) and ds[0][1].shape == (40, 64)
    assert ds[1][1].shape == (40, 64) and ds.read_label(1).shape == (40, 64)
    np.testing.assert_array_equal(ds[0][1], classes.LABEL_ID_TO_TRAIN_ID[gta5_label_ids(40, 64)])


def test_truncated_png_names_file(tmp_path):
    root = make_gta5(tmp_path / "gta5", count=2)
    truncate(root / "images" / "00001.png")
    truncate(root / "labels" / "00002.png")
    ds = GTA5(root)
    with pytest.raises(DatasetError, match="00001.png.*cannot decode"):
        ds[0]
    with pytest.raises(DatasetError, match=r"labels/00002.png.*cannot decode"):
        ds[1]


def test_size_mismatch_outside_gta5_is_an_error(tmp_path):
    root = make_cityscapes(tmp_path / "cs", per_city=1, cities=("aachen",))
    save_rgb(root / "leftImg8bit" / "train" / "aachen" / "aachen_000000_000019_leftImg8bit.png",
             random_rgb(30, 60))
    with pytest.raises(DatasetError, match="60x30 but its label .* is 64x32"):
        Cityscapes(root)[0]


# ----- SYNTHIA in its exact format

def test_synthia_reader_maps_first_channel(tmp_path):
    root = make_synthia(tmp_path / "synthia", count=2)
    ds = SYNTHIA(root)
    assert len(ds) == 2 and ds.num_classes == 16
    image, label, name = ds[1]
    assert name == "0000001" and image.shape == (30, 46, 3) and label.dtype == np.uint8
    expected = classes.SYNTHIA_ID_TO_TRAIN_ID[synthia_class_ids(30, 46)]
    np.testing.assert_array_equal(label, expected)
    ids = synthia_class_ids(30, 46)
    assert np.all(label[ids == 3] == 0) and np.all(label[ids == 21] == 3) and np.all(label[ids == 13] == 255)


def test_synthia_label_through_8bit_path_fails_loudly(tmp_path):
    path = tmp_path / "GT" / "LABELS" / "0000000.png"
    save_synthia_label(path, synthia_class_ids(30, 46))
    np.testing.assert_array_equal(read_label_synthia(path), synthia_class_ids(30, 46))
    with pytest.raises(DatasetError) as err:
        read_label_ids(path)
    assert "0000000.png" in str(err.value) and "16-bit RGB" in str(err.value)


@pytest.mark.parametrize("bad, found", [
    (np.zeros((30, 46, 3), np.uint8), "dtype uint8 with 3 channel"),
    (np.zeros((30, 46), np.uint16), "dtype uint16 with 1 channel"),
])
def test_synthia_wrong_label_format_is_rejected(tmp_path, bad, found):
    import cv2

    root = make_synthia(tmp_path / "synthia", count=1)
    cv2.imwrite(str(root / "GT" / "LABELS" / "0000000.png"), bad)
    with pytest.raises(DatasetError) as err:
        SYNTHIA(root)[0]
    assert found in str(err.value) and "expected uint16 with 3 channels" in str(err.value)
    assert "0000000.png" in str(err.value)


# ----- Gluon dataset behaviour

def test_transform_receives_image_and_label(tmp_path):
    root = make_cityscapes(tmp_path / "cs")
    ds = Cityscapes(root)
    seen = []

    def fn(image, label):
        seen.append((image.shape, label.shape))
        return image.mean(), label.max()

    out = ds.transform(fn)
    assert len(out) == 4 and out.names == ds.names and out.num_classes == 19
    mean, top = out[2]
    assert seen == [((32, 64, 3), (32, 64))] and top == 255
    eager = ds.transform(fn, lazy=False)
    assert len(eager) == 4 and eager[2][0] == pytest.approx(mean)
    first = ds.transform_first(lambda image: image.shape)
    assert first[0][0] == (32, 64, 3) and first[0][1].shape == (32, 64)

"""Training/evaluation transforms: shapes, geometry, padding, flip, hard-class crops, DataLoader."""
import numpy as np
import pytest
from mxnet import gluon
from test_data_helpers import make_cityscapes, make_synthia

from mlsl_gluon.data import (
    MEAN,
    STD,
    SYNTHIA,
    Cityscapes,
    EvalTransform,
    TrainTransform,
    normalize,
    subsample_label,
)


def coordinate_image(height, width):
    """RGB image whose pixel (y, x) encodes its position: R = x % 256, G = y % 256, B = x // 256."""
    y, x = np.mgrid[:height, :width]
    return np.stack([x % 256, y % 256, x // 256], axis=-1).astype(np.uint8)


def denormalize(img):
    rgb = (img.transpose(1, 2, 0) * np.array(STD) + np.array(MEAN)) * 255.0
    return np.rint(rgb).astype(np.int64)


def test_normalize_known_values():
    image = np.zeros((2, 3, 3), np.uint8)
    image[0, 0] = 255
    image[1, 2] = np.rint(np.array(MEAN) * 255)
    out = normalize(image)
    assert out.shape == (3, 2, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0, 0], (1 - np.array(MEAN)) / np.array(STD), rtol=1e-6)
    np.testing.assert_allclose(out[:, 0, 1], -np.array(MEAN) / np.array(STD), rtol=1e-6)
    np.testing.assert_allclose(out[:, 1, 2], 0.0, atol=0.01)


def test_subsample_label_offset_4_stride_8():
    label = np.arange(504 * 504).reshape(504, 504)
    sub = subsample_label(label)
    assert sub.shape == (63, 63)
    assert sub[0, 0] == label[4, 4] and sub[62, 62] == label[500, 500] and sub[1, 2] == label[12, 20]


def test_train_transform_shapes_and_types():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (600, 900, 3), dtype=np.uint8)
    label = rng.integers(0, 19, (600, 900), dtype=np.uint8)
    img, label8 = TrainTransform()(image, label, rng=np.random.default_rng(1))
    assert img.shape == (3, 504, 504) and img.dtype == np.float32
    assert label8.shape == (63, 63) and label8.dtype == np.float32
    t = TrainTransform(crop_size=96, return_full_label=True)
    img, label8, full = t(image, label, np.random.default_rng(2))
    assert img.shape == (3, 96, 96) and label8.shape == (12, 12) and full.shape == (96, 96)
    assert full.dtype == np.uint8
    np.testing.assert_array_equal(label8, full[4::8, 4::8].astype(np.float32))


def test_crop_at_scale_one_is_an_exact_window():
    """Scale 1, no flip: the crop is a translated window of the image, label aligned with it."""
    image = coordinate_image(250, 400)
    label = (np.arange(400)[None, :] // 10 % 19).repeat(250, 0).astype(np.uint8)
    t = TrainTransform(crop_size=128, scale_range=(1.0, 1.0), flip=False, return_full_label=True)
    offsets = set()
    for seed in range(5):
        img, _, full = t(image, label, rng=np.random.default_rng(seed))
        rgb = denormalize(img)
        x = rgb[..., 0] + 256 * rgb[..., 2]
        y = rgb[..., 1]
        x0, y0 = x[0, 0], y[0, 0]
        np.testing.assert_array_equal(x, x0 + np.arange(128)[None, :].repeat(128, 0))
        np.testing.assert_array_equal(y, y0 + np.arange(128)[:, None].repeat(128, 1))
        np.testing.assert_array_equal(full, label[y0:y0 + 128, x0:x0 + 128])
        offsets.add((int(x0), int(y0)))
    assert len(offsets) == 5  # the window moves with the seed


def test_small_image_is_padded_with_mean_and_ignore():
    image = np.full((40, 60, 3), 255, np.uint8)
    label = np.full((40, 60), 3, np.uint8)
    t = TrainTransform(crop_size=64, scale_range=(1.0, 1.0), return_full_label=True)
    for seed in range(4):
        img, label8, full = t(image, label, rng=np.random.default_rng(seed))
        inside = full == 3
        assert inside.sum() == 40 * 60
        assert np.all(full[~inside] == 255)
        assert np.all(img[:, ~inside] == 0.0)  # the mean colour, normalised
        expected = ((1 - np.array(MEAN)) / np.array(STD))[:, None]
        np.testing.assert_allclose(img[:, inside], np.broadcast_to(expected, (3, 40 * 60)), rtol=1e-5)
        assert set(np.unique(label8)) <= {3.0, 255.0}


def test_scale_changes_extent_and_keeps_label_values():
    image = np.zeros((200, 200, 3), np.uint8)
    label = np.zeros((200, 200), np.uint8)
    label[:, 100:] = 7
    image[:, 100:] = 255
    t = TrainTransform(crop_size=128, scale_range=(0.5, 0.5), flip=False, return_full_label=True)
    img, _, full = t(image, label, rng=np.random.default_rng(0))
    assert (full != 255).sum() == 100 * 100
    assert set(np.unique(full)) == {0, 7, 255}
    # image and label stay aligned after rescaling (only the boundary column may blend)
    bright = denormalize(img)[..., 0] > 127
    valid = full != 255
    assert (bright[valid] == (full[valid] == 7)).mean() > 0.99


def test_flip_mirrors_image_and_label_half_of_the_time():
    image = coordinate_image(64, 64)
    label = (np.arange(64)[None, :] % 19).repeat(64, 0).astype(np.uint8)
    plain = TrainTransform(crop_size=64, scale_range=(1.0, 1.0), flip=False, return_full_label=True)
    flipping = TrainTransform(crop_size=64, scale_range=(1.0, 1.0), flip=True, return_full_label=True)
    ref_img, _, ref_label = plain(image, label, rng=np.random.default_rng(0))
    flips = 0
    for seed in range(40):
        img, _, full = flipping(image, label, rng=np.random.default_rng(seed))
        if np.array_equal(full, ref_label):
            np.testing.assert_array_equal(img, ref_img)
        else:
            np.testing.assert_array_equal(full, ref_label[:, ::-1])
            np.testing.assert_array_equal(img, ref_img[:, :, ::-1])
            flips += 1
    assert 10 <= flips <= 30


def test_same_rng_same_output():
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (150, 170, 3), dtype=np.uint8)
    label = rng.integers(0, 19, (150, 170), dtype=np.uint8)
    t = TrainTransform(crop_size=64)
    a = t(image, label, rng=np.random.default_rng(11))
    b = t(image, label, rng=np.random.default_rng(11))
    c = t(image, label, rng=np.random.default_rng(12))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_hard_class_crop_released_code_option():
    label = np.zeros((800, 800), np.uint8)
    label[780:790, 5:15] = 17  # a tiny rare object in a corner
    image = np.zeros((800, 800, 3), np.uint8)
    kw = dict(crop_size=96, scale_range=(0.9, 1.1), return_full_label=True)
    always = TrainTransform(hard_class=17, hard_class_prob=1.0, **kw)
    never = TrainTransform(hard_class=None, **kw)
    off = TrainTransform(hard_class=17, hard_class_prob=0.0, **kw)
    hits = {"always": 0, "never": 0, "off": 0}
    for seed in range(30):
        for key, t in (("always", always), ("never", never), ("off", off)):
            hits[key] += int(np.any(t(image, label, rng=np.random.default_rng(seed))[2] == 17))
    assert hits["always"] == 30
    assert hits["never"] <= 3 and hits["off"] <= 3
    # a class absent from the label falls back to a random crop
    absent = TrainTransform(hard_class=(12, 13), hard_class_prob=1.0, **kw)
    assert absent(image, label, rng=np.random.default_rng(0))[0].shape == (3, 96, 96)


def test_train_transform_rejects_bad_arguments():
    with pytest.raises(ValueError, match="multiple of 8"):
        TrainTransform(crop_size=500)
    image, rng = np.zeros((10, 10, 3), np.uint8), np.random.default_rng(0)
    with pytest.raises(ValueError, match="needs a label"):
        TrainTransform()(image, None, rng)
    with pytest.raises(ValueError, match="sizes differ"):
        TrainTransform()(image, np.zeros((10, 11), np.uint8), rng)


def test_eval_transform():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    label = rng.integers(0, 19, (37, 53), dtype=np.uint8)
    img, out_label = EvalTransform()(image, label)
    assert img.shape == (3, 37, 53) and img.dtype == np.float32
    np.testing.assert_array_equal(img, normalize(image))
    assert out_label.dtype == np.uint8
    np.testing.assert_array_equal(out_label, label)
    img, out_label = EvalTransform(scale=0.5)(image, label)
    assert img.shape == (3, 18, 26) and out_label.shape == (37, 53)
    assert EvalTransform()(image, None)[1] is None


def test_dataloader_with_two_workers(tmp_path):
    root = make_synthia(tmp_path / "synthia", count=6, size=(80, 50))
    frame = (root / "RGB" / "0000000.png").read_bytes()
    for i in range(1, 6):  # identical frames: any difference between crops comes from the rng
        (root / "RGB" / f"{i:07d}.png").write_bytes(frame)
    ds, transform = SYNTHIA(root), TrainTransform(crop_size=48)

    class PerItemRng(gluon.data.Dataset):
        """As the training set does it: each item draws from its own generator."""

        def __len__(self):
            return len(ds)

        def __getitem__(self, index):
            image, label, _ = ds[index]
            return transform(image, label, np.random.default_rng(index))

    loader = gluon.data.DataLoader(PerItemRng(), batch_size=3, shuffle=False, last_batch="keep",
                                   num_workers=2)
    batches = list(loader)
    assert [b[0].shape for b in batches] == [(3, 3, 48, 48), (3, 3, 48, 48)]
    assert [b[1].shape for b in batches] == [(3, 6, 6), (3, 6, 6)]
    for img, label8 in batches:
        assert img.dtype == np.float32 and label8.dtype == np.float32
        values = set(np.unique(label8.asnumpy()))
        assert values <= set(range(16)) | {255} and len(values) > 1
    # per-item generators: the two workers do not repeat each other's random crops
    assert not np.array_equal(batches[0][0].asnumpy(), batches[1][0].asnumpy())

    evaluation = Cityscapes(make_cityscapes(tmp_path / "cs")).transform(EvalTransform())
    batch = next(iter(gluon.data.DataLoader(evaluation, batch_size=2, num_workers=2)))
    assert batch[0].shape == (2, 3, 32, 64) and batch[0].dtype == np.float32
    assert batch[1].shape == (2, 32, 64) and batch[1].dtype == np.uint8

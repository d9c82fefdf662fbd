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


def crop_corner(image, label, transform, seed):
    """(y0, x0) of the crop window, read from a coordinate image (scale 1, no flip), and the
    full-resolution crop label."""
    img, _, full = transform(image, label, rng=np.random.default_rng(seed))
    rgb = denormalize(img)
    return (int(rgb[0, 0, 1]), int(rgb[0, 0, 0])), full


def binomial_ok(hits, trials, p):
    """|hits - trials p| within 4 standard deviations."""
    return abs(hits - trials * p) <= 4 * np.sqrt(trials * p * (1 - p))


PLAIN = dict(crop_size=64, scale_range=(1.0, 1.0), flip=False, return_full_label=True)


def test_hard_class_drawn_uniformly_among_present_classes():
    # 200 x 200, S = 64 at scale 1: half a crop is 32, centres in rows/cols 32..166.
    label = np.zeros((200, 200), np.uint8)
    label[40:90, 40:80] = 5  # 2000 pixels
    label[120:122, 150:152] = 7  # 4 pixels
    image = coordinate_image(200, 200)
    t = TrainTransform(hard_class=(5, 7, 9), hard_class_prob=1.0, **PLAIN)
    trials, hits7 = 1000, 0
    for seed in range(trials):
        (y0, x0), full = crop_corner(image, label, t, seed)
        centre = label[y0 + 32, x0 + 32]
        assert centre in (5, 7) and full[32, 32] == centre
        np.testing.assert_array_equal(full, label[y0:y0 + 64, x0:x0 + 64])
        hits7 += int(centre == 7)
    # class 9 is absent: 5 and 7 are drawn with 1/2 each (a pixel draw would give 7 with 4/2004)
    assert binomial_ok(hits7, trials, 0.5)


def test_hard_class_priority_classes_first():
    label = np.zeros((200, 200), np.uint8)
    label[40:90, 40:80] = 5
    label[120:122, 150:152] = 7
    label[100, 60] = 3
    image = coordinate_image(200, 200)
    t = TrainTransform(hard_class=(5, 7), hard_class_priority=(9, 3), hard_class_prob=1.0, **PLAIN)
    for seed in range(50):  # the one present priority class, however small, always wins
        assert crop_corner(image, label, t, seed)[0] == (100 - 32, 60 - 32)
    label[100, 60] = 0  # no priority class present: 5 or 7, 1/2 each
    trials = 400
    hits7 = sum(int(crop_corner(image, label, t, seed)[1][32, 32] == 7) for seed in range(trials))
    assert binomial_ok(hits7, trials, 0.5)


def test_hard_class_centres_half_a_crop_from_the_border():
    label = np.zeros((200, 200), np.uint8)
    label[160:171, 100] = 7  # rows 160..170, of which 160..166 may be centres (200 - 32 - 2 = 166)
    label[100, 10:40] = 8  # cols 10..39, of which 32..39 may be centres
    label[3, 100] = 9  # too close to the top: never a centre, so a uniform crop
    image = coordinate_image(200, 200)
    t = TrainTransform(hard_class=(7,), hard_class_prob=1.0, **PLAIN)
    corners = {crop_corner(image, label, t, seed)[0] for seed in range(300)}
    assert corners == {(y - 32, 100 - 32) for y in range(160, 167)}  # last window: rows 134..197
    t = TrainTransform(hard_class=(8,), hard_class_prob=1.0, **PLAIN)
    corners = {crop_corner(image, label, t, seed)[0] for seed in range(300)}
    assert corners == {(100 - 32, x - 32) for x in range(32, 40)}
    t = TrainTransform(hard_class=(9,), hard_class_prob=1.0, **PLAIN)
    corners = {crop_corner(image, label, t, seed)[0] for seed in range(300)}
    assert len(corners) > 250  # uniform over 137 x 137 windows, not the one around (3, 100)
    # 66 x 66: the only centre is (32, 32), the window (0..63, 0..63); 65 x 65: no centre, so a
    # uniform crop (start 0 or 1); 40 x 40 (smaller than the crop): uniform, padded
    for size, expected in ((66, {(0, 0)}), (65, {(0, 0), (0, 1), (1, 0), (1, 1)})):
        corners = {crop_corner(coordinate_image(size, size), np.full((size, size), 7, np.uint8),
                               TrainTransform(hard_class=7, hard_class_prob=1.0, **PLAIN), seed)[0]
                   for seed in range(100)}
        assert corners == expected
    small = TrainTransform(hard_class=7, hard_class_prob=1.0, **PLAIN)
    fulls = [small(coordinate_image(40, 40), np.full((40, 40), 7, np.uint8), np.random.default_rng(s))[2]
             for s in range(20)]
    assert all((f == 7).sum() == 1600 for f in fulls) and len({np.argmax(f == 7) for f in fulls}) > 1


def test_hard_class_window_at_scale_2():
    # scale 2, S = 64: the native crop is int(64 / 2) = 32 pixels, the pixel at index 16: the
    # window starts at native (50 - 16, 60 - 16), i.e. at (68, 88) of the 200 x 200 rescaled frame.
    label = np.zeros((100, 100), np.uint8)
    label[50, 60] = 7
    t = TrainTransform(hard_class=7, hard_class_prob=1.0, **dict(PLAIN, scale_range=(2.0, 2.0)))
    for seed in range(5):
        full = t(np.zeros((100, 100, 3), np.uint8), label, np.random.default_rng(seed))[2]
        # rescaled pixel 2k + j (j = 0, 1) comes from native pixel k (nearest): rows 100, 101
        # and cols 120, 121 of the frame, i.e. crop pixels 32, 33
        np.testing.assert_array_equal(np.argwhere(full == 7), [[32, 32], [32, 33], [33, 32], [33, 33]])


def test_hard_class_prob_and_no_hard_classes():
    label = np.zeros((200, 200), np.uint8)
    label[50, 60] = 7
    image = coordinate_image(200, 200)
    trials = 1000
    for prob in (0.3, 0.8):
        t = TrainTransform(hard_class=7, hard_class_prob=prob, **PLAIN)
        hard = sum(int(crop_corner(image, label, t, seed)[0] == (18, 28)) for seed in range(trials))
        # a uniform crop lands on that window with 1 / 137^2
        assert binomial_ok(hard, trials, prob + (1 - prob) / 137 ** 2)
    never = TrainTransform(hard_class=None, **PLAIN)
    off = TrainTransform(hard_class=7, hard_class_prob=0.0, **PLAIN)
    lands = [crop_corner(image, label, t, s)[0] == (18, 28) for t in (never, off) for s in range(200)]
    assert sum(lands) <= 1
    # a class absent from the label falls back to a random crop
    absent = TrainTransform(hard_class=(12, 13), hard_class_prob=1.0, **PLAIN)
    assert len({crop_corner(image, label, absent, seed)[0] for seed in range(20)}) > 15


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

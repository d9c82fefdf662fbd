"""HDF5 score cache: round trip, selection from the cache against full-precision selection (with
and without the spatial prior), stale/half-written/corrupted entries and files."""
import h5py
import numpy as np
import pytest

from mlsl_gluon.pseudo_labels import (
    CacheError,
    ProbabilityCache,
    ThresholdAccumulator,
    apply_spatial_prior,
    dequantise_probability,
    encode_top_classes,
    quantise_probability,
    select_from_top_classes,
    select_pseudo_labels,
)
from mlsl_gluon.pseudo_labels.cache import FORMAT_VERSION, spread_is_lossless

META = {"round": 1, "checkpoint_digest": "abc", "K": 50, "patch_size": 512, "seed": 0,
        "num_classes": 4, "resolution": "native", "flip": True}
C = 19


def random_map(shape=(4, 30, 41), seed=0):
    logits = np.random.default_rng(seed).normal(size=shape) * 3
    e = np.exp(logits - logits.max(0))
    return (e / e.sum(0)).astype(np.float32)


def dirichlet_scores(num, shape, seed, prior_alpha=0.1):
    """Random 19-class maps times a random smoothed spatial prior (rare classes get small k)."""
    rng = np.random.default_rng(seed)
    prior = 0.9 * rng.dirichlet(np.full(C, prior_alpha), size=(8, 16)) + 0.1 / C
    prior = prior.transpose(2, 0, 1).astype(np.float32)
    maps = [rng.dirichlet(np.full(C, 0.3), size=shape).transpose(2, 0, 1).astype(np.float32)
            for _ in range(num)]
    return [apply_spatial_prior(m, prior) for m in maps]


def test_round_trip_and_names(tmp_path):
    prob = random_map()
    valid = np.ones(prob.shape[1:], bool)
    valid[0, :5] = False
    top_class, top_code = encode_top_classes(prob, top=3, valid=valid)
    assert top_class.shape == (3, 30, 41) and top_code.dtype == np.uint16
    assert np.array_equal(top_class[0][valid], prob.argmax(0)[valid])
    order = np.argsort(-prob, axis=0, kind="stable")[:3]
    assert np.array_equal(top_class[:, valid], order[:, valid])
    expected_code = quantise_probability(np.take_along_axis(prob, order, 0))
    assert np.array_equal(top_code[:, valid], expected_code[:, valid])
    assert np.all(top_class[:, ~valid] == 255)
    path = tmp_path / "c.h5"
    with ProbabilityCache(str(path), META) as cache:
        cache.write("aachen/aachen_000000_000019", top_class, top_code, uncovered=5)
        assert cache.has("aachen/aachen_000000_000019") and not cache.has("other")
    with ProbabilityCache(str(path), META, mode="r") as cache:
        assert cache.names() == ["aachen/aachen_000000_000019"]
        c, code, uncovered = cache.read("aachen/aachen_000000_000019")
        assert np.array_equal(c, top_class) and np.array_equal(code, top_code) and uncovered == 5
        assert 0 < cache.entry_nbytes("aachen/aachen_000000_000019") < top_code.nbytes + top_class.nbytes
        with pytest.raises(CacheError, match="no entry"):
            cache.read("missing")


def cached_round(scores, top, portion, floor=0.0, shift=0):
    """What a round does: encode, thresholds from the cached first-class codes, select."""
    encoded = [encode_top_classes(s, top=top, shift=shift, floor=floor) for s in scores]
    acc = ThresholdAccumulator(scores[0].shape[0], shift)
    for top_class, top_code in encoded:
        acc.update_codes(top_class[0], top_code[0])
    k = acc.thresholds(portion)
    labels = [select_from_top_classes(c, dequantise_probability(code, shift), k) for c, code in encoded]
    return k, labels


@pytest.mark.parametrize("shift", [0, 2])
def test_cached_thresholds_and_decisions_equal_full_precision(shift):
    maps = [random_map(seed=s) for s in range(4)]
    full = ThresholdAccumulator(4, shift)
    for m in maps:
        full.update(m)
    k, labels = cached_round(maps, 4, 0.35, shift=shift)
    assert np.array_equal(k, full.thresholds(0.35))
    for m, label in zip(maps, labels):
        reference = select_pseudo_labels(m, k)
        # Every test s >= k_c is exact (k_c is a grid point): a pixel is selected from the cache
        # exactly when it is at full precision; only the order of near-equal ratios may differ.
        assert np.array_equal(label == 255, reference == 255)
        ratios = np.sort(m / k[:, None, None], axis=0)
        near_tie = ratios[-1] - ratios[-2] < 2.0 ** -(10 - shift) * ratios[-1]
        assert np.array_equal(label[~near_tie], reference[~near_tie])


@pytest.mark.parametrize("shape, num", [((64, 128), 4), ((256, 512), 1)])
def test_cache_selection_with_prior_agrees_with_full_precision(shape, num):
    for seed in (0, 1):
        scores = dirichlet_scores(num, shape, seed)
        k, labels = cached_round(scores, 3, 0.5)
        agree = np.mean([np.mean(a == select_pseudo_labels(s, k)) for a, s in zip(labels, scores)])
        assert agree >= 0.9999
        # Where the full-precision winner is a class ranked below 3rd, the cache cannot follow.
        for s, label in zip(scores, labels):
            winner = select_pseudo_labels(s, k)
            order = np.argsort(-s, axis=0, kind="stable")
            rank = np.argmax(order == winner.astype(np.int64)[None], axis=0)
            assert np.all(label[(winner != 255) & (rank >= 3)] != winner[(winner != 255) & (rank >= 3)])


def test_without_prior_the_floor_is_lossless():
    maps = [random_map(shape=(19, 40, 60), seed=s) for s in range(3)]
    floor = float(dequantise_probability(quantise_probability(1.0 / 19)))
    k_floor, with_floor = cached_round(maps, 3, 0.5, floor=floor)
    k_all, without = cached_round(maps, 3, 0.5)
    assert np.array_equal(k_floor, k_all) and np.all(k_all >= floor)
    assert all(np.array_equal(a, b) for a, b in zip(with_floor, without))


def test_spread_rule_is_lossless_when_the_thresholds_allow_it():
    scores = dirichlet_scores(3, (48, 64), seed=2)
    k, everything = cached_round(scores, 3, 0.5)
    acc = ThresholdAccumulator(C)
    for s in scores:
        acc.update(s)
    counts = acc.class_counts()
    spread = k[counts > 0].max() / k.min()
    assert spread_is_lossless(k, spread * 1.01, counts) and not spread_is_lossless(k, spread / 1.01, counts)
    for factor, lossless in ((1.01, True), (1 / 4, False)):
        encoded = [encode_top_classes(s, top=3, spread=spread * factor) for s in scores]
        labels = [select_from_top_classes(c, dequantise_probability(code), k) for c, code in encoded]
        same = all(np.array_equal(a, b) for a, b in zip(labels, everything))
        assert same == lossless
        dropped = sum(int((c[1:] == 255).sum()) for c, _ in encoded)
        assert dropped > 0


def test_format_version_is_in_the_metadata(tmp_path):
    path = tmp_path / "c.h5"
    with ProbabilityCache(str(path), META) as cache:
        cache.write("a", *encode_top_classes(random_map()))
    with h5py.File(path, "a") as f:
        assert f.attrs["format_version"] == FORMAT_VERSION
        f.attrs["format_version"] = FORMAT_VERSION - 1
    with pytest.raises(CacheError, match=f"format_version: cache has {FORMAT_VERSION - 1}, "
                                         f"expected {FORMAT_VERSION}"):
        ProbabilityCache(str(path), META)


def test_second_class_floor():
    prob = np.array([[[0.7, 0.5]], [[0.25, 0.45]], [[0.05, 0.05]]], dtype=np.float32)
    top_class, top_code = encode_top_classes(prob, top=2, floor=0.3)
    assert top_class[:, 0].tolist() == [[0, 0], [255, 1]]
    assert top_code[1, 0, 0] == 0
    # The first class is kept whatever its probability.
    assert encode_top_classes(prob, top=2, floor=0.9)[0][0].tolist() == [[0, 0]]


def test_stale_metadata_is_refused_or_regenerated(tmp_path):
    path = tmp_path / "round1.h5"
    prob = random_map()
    with ProbabilityCache(str(path), META) as cache:
        cache.write("a", *encode_top_classes(prob))
    stale = dict(META, K=25, checkpoint_digest="def")
    with pytest.raises(CacheError) as err:
        ProbabilityCache(str(path), stale)
    message = str(err.value)
    assert "round1.h5" in message and "K: cache has 50, expected 25" in message
    assert "checkpoint_digest" in message and "seed" not in message
    with ProbabilityCache(str(path), stale, regenerate=True) as cache:
        assert cache.names() == []  # regenerated, nothing reused
    with ProbabilityCache(str(path), stale) as cache:
        assert cache.names() == []


def test_half_written_entry_is_not_valid(tmp_path):
    path = tmp_path / "c.h5"
    prob = random_map()
    top_class, top_code = encode_top_classes(prob)
    with ProbabilityCache(str(path), META) as cache:
        cache.write("done", top_class, top_code)
    # What a writer killed before the completion mark leaves behind.
    with h5py.File(path, "a") as f:
        group = f.create_group("half")
        group.create_dataset("top_class", data=top_class)
        group.attrs["name"] = "half"
    with ProbabilityCache(str(path), META) as cache:
        assert cache.has("done") and not cache.has("half")
        assert cache.names() == ["done"]
        with pytest.raises(CacheError, match="half-written"):
            cache.read("half")
        cache.write("half", top_class, top_code)  # replaced on rerun
        assert np.array_equal(cache.read("half")[0], top_class)


def test_corrupted_entry_is_refused(tmp_path):
    path = tmp_path / "c.h5"
    top_class, top_code = encode_top_classes(random_map())
    with ProbabilityCache(str(path), META) as cache:
        cache.write("x", top_class, top_code)
    with h5py.File(path, "a") as f:
        f["x/top_class"][0, 3, 3] = (int(top_class[0, 3, 3]) + 1) % 4
    with ProbabilityCache(str(path), META) as cache:
        with pytest.raises(CacheError, match=r"c\.h5.*'x'.*CRC"):
            cache.read("x")


def test_unreadable_file(tmp_path):
    path = tmp_path / "broken.h5"
    path.write_bytes(b"this is not HDF5")
    with pytest.raises(CacheError, match="broken.h5.*regenerate"):
        ProbabilityCache(str(path), META)
    with ProbabilityCache(str(path), META, regenerate=True) as cache:
        assert cache.names() == []
    with pytest.raises(CacheError, match="does not exist"):
        ProbabilityCache(str(tmp_path / "absent.h5"), META, mode="r")

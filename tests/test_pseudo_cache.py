"""HDF5 probability cache: round trip, decision-exact quantisation, stale/half-written/corrupted
entries and files."""
import h5py
import numpy as np
import pytest

from mlsl_gluon.pseudo_labels import (
    CacheError,
    ProbabilityCache,
    ThresholdAccumulator,
    dequantise_probability,
    encode_top_classes,
    select_from_top_classes,
    select_pseudo_labels,
)
from mlsl_gluon.pseudo_labels.cache import FORMAT_VERSION, SECOND_SHIFT, coarsen_later_codes

META = {"round": 1, "checkpoint_digest": "abc", "K": 50, "patch_size": 512, "seed": 0,
        "num_classes": 4, "resolution": "native", "flip": True}


def random_map(shape=(4, 30, 41), seed=0):
    logits = np.random.default_rng(seed).normal(size=shape) * 3
    e = np.exp(logits - logits.max(0))
    return (e / e.sum(0)).astype(np.float32)


def test_round_trip_and_names(tmp_path):
    prob = random_map()
    valid = np.ones(prob.shape[1:], bool)
    valid[0, :5] = False
    top_class, top_code = encode_top_classes(prob, top=2, valid=valid)
    assert top_class.shape == (2, 30, 41) and top_code.dtype == np.uint16
    assert np.array_equal(top_class[0][valid], prob.argmax(0)[valid])
    assert np.all(top_class[:, ~valid] == 255)
    path = tmp_path / "c.h5"
    with ProbabilityCache(str(path), META) as cache:
        cache.write("aachen/aachen_000000_000019", top_class, top_code, uncovered=5)
        assert cache.has("aachen/aachen_000000_000019") and not cache.has("other")
    with ProbabilityCache(str(path), META, mode="r") as cache:
        assert cache.names() == ["aachen/aachen_000000_000019"]
        c, code, uncovered = cache.read("aachen/aachen_000000_000019")
        assert np.array_equal(c, top_class) and uncovered == 5
        assert np.array_equal(code, coarsen_later_codes(top_code, SECOND_SHIFT))
        assert 0 < cache.entry_nbytes("aachen/aachen_000000_000019") < top_code.nbytes + top_class.nbytes
        with pytest.raises(CacheError, match="no entry"):
            cache.read("missing")


@pytest.mark.parametrize("shift", [0, 2])
def test_cached_selection_equals_full_precision(shift):
    maps = [random_map(seed=s) for s in range(4)]
    full = ThresholdAccumulator(4, shift)
    cached = ThresholdAccumulator(4, shift)
    encoded = []
    for m in maps:
        full.update(m)
        top_class, top_code = encode_top_classes(m, top=4, shift=shift)
        cached.update_codes(top_class[0], top_code[0])
        encoded.append((top_class, top_code))
    k = full.thresholds(0.35)
    assert np.array_equal(k, cached.thresholds(0.35))
    for m, (top_class, top_code) in zip(maps, encoded):
        from_cache = select_from_top_classes(top_class, dequantise_probability(top_code, shift), k)
        # Every single-class decision p >= k_c is exact; only cross-class ratio comparisons
        # see the quantisation, so allow at most one pixel in 1000.
        assert (from_cache == select_pseudo_labels(m, k)).mean() >= 0.999


@pytest.mark.parametrize("shift", [0, 2])
def test_later_codes_are_on_the_coarser_grid(tmp_path, shift):
    prob = random_map(seed=3)
    top_class, top_code = encode_top_classes(prob, top=3, shift=shift)
    with ProbabilityCache(str(tmp_path / "c.h5"), META, second_shift=3) as cache:
        cache.write("x", top_class, top_code)
        code = cache.read("x")[1]
    assert np.array_equal(code, coarsen_later_codes(top_code, 3))
    # Cleared low bits = the largest point <= p of the grid 3 bits coarser.
    later = np.take_along_axis(prob, top_class[1:].astype(np.int64), axis=0)
    expected = dequantise_probability(encode_top_classes(prob, top=3, shift=shift + 3)[1][1:], shift + 3)
    assert np.array_equal(dequantise_probability(code[1:], shift), expected)
    assert np.all(expected <= later) and np.all(later - expected < 2 ** -(10 - shift - 3))


def test_coarser_later_codes_select_like_full_precision_but_near_ties(tmp_path):
    # Labels from a stored entry (second class 2 bits coarser) against full-precision selection
    # with the same thresholds: only near-ties between the two classes may differ.
    maps = [random_map(shape=(4, 60, 80), seed=s) for s in range(3)]
    acc = ThresholdAccumulator(4)
    with ProbabilityCache(str(tmp_path / "c.h5"), META, second_shift=2) as cache:
        for i, m in enumerate(maps):
            cache.write(str(i), *encode_top_classes(m, top=2))
            top_class, top_code, _ = cache.read(str(i))
            acc.update_codes(top_class[0], top_code[0])
        k = acc.thresholds(0.4)
        for i, m in enumerate(maps):
            top_class, top_code, _ = cache.read(str(i))
            label = select_from_top_classes(top_class, dequantise_probability(top_code), k)
            reference = select_pseudo_labels(m, k)
            sorted_p = np.sort(m / k[:, None, None], axis=0)
            near_tie = (sorted_p[-1] - sorted_p[-2] < 0.01) | (np.abs(sorted_p[-2] - 1) < 0.01)
            assert np.all(label[~near_tie] == reference[~near_tie])
            assert (label != reference).mean() <= 0.002


def test_second_shift_and_format_are_in_the_metadata(tmp_path):
    path = tmp_path / "c.h5"
    with ProbabilityCache(str(path), META) as cache:
        cache.write("a", *encode_top_classes(random_map()))
    with h5py.File(path, "r") as f:
        assert f.attrs["format_version"] == FORMAT_VERSION
        assert f.attrs["second_code_shift"] == SECOND_SHIFT
    other = SECOND_SHIFT + 1
    with pytest.raises(CacheError, match=f"second_code_shift: cache has {SECOND_SHIFT}, expected {other}"):
        ProbabilityCache(str(path), META, second_shift=other)
    with pytest.raises(ValueError, match="second_shift"):
        ProbabilityCache(str(tmp_path / "d.h5"), META, second_shift=12)


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

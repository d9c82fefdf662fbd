"""HDF5 score cache: round trip, selection from the cache against full-precision selection (with
and without the spatial prior), stale/half-written/corrupted entries and files."""
import cv2
import h5py
import numpy as np
import pytest
from test_pseudo_selection import exact_thresholds  # the full-sort reference of SPEC section 3

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
from mlsl_gluon.pseudo_labels.cache import (
    DEFAULT_TOP_CLASSES,
    FORMAT_VERSION,
    LATER_CLASS_SPREAD,
    PLAIN_FIRST_SHIFT,
    PLAIN_RATIO_STEPS,
    PRIOR_FIRST_SHIFT,
    spread_is_lossless,
)
from mlsl_gluon.pseudo_labels.grid import coarsen_codes
from mlsl_gluon.pseudo_labels.thresholds import CodeRefinement

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


def structured_scores(shape, seed):
    """Smooth 19-class maps (blurred logits, as network maps are): spatially coherent regions."""
    rng = np.random.default_rng(seed)
    coarse = rng.normal(size=(C, shape[0] // 16 + 1, shape[1] // 16 + 1)) * 4
    logits = np.stack([cv2.resize(c, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC) for c in coarse])
    e = np.exp(logits - logits.max(0))
    return (e / e.sum(0)).astype(np.float32)


def test_round_trip_and_names(tmp_path):
    prob = random_map()
    valid = np.ones(prob.shape[1:], bool)
    valid[0, :5] = False
    entry = encode_top_classes(prob, top=3, valid=valid, first_shift=-2, spread=64.0)
    assert entry.top_class.shape == (3, 30, 41) and entry.later_code.shape == (2, 30, 41)
    order = np.argsort(-prob, axis=0, kind="stable")[:3]
    kept = entry.top_class != 255
    assert np.array_equal(entry.top_class[kept], order[kept]) and kept[0][valid].all()
    assert np.all(entry.top_class[:, ~valid] == 255)
    true = np.take_along_axis(prob, order, 0).astype(np.float64)
    scores = entry.scores()
    # First: the 12-bit grid point at or below the score; later: ratios to it, 2^-11 relative.
    assert np.array_equal(entry.first_code[valid], quantise_probability(prob.max(0), -2)[valid])
    assert ((scores[0] <= true[0]) & (true[0] - scores[0] < 2.0 ** -12 * true[0]))[valid].all()
    later = kept[1:]
    rel = np.abs(scores[1:][later] - true[1:][later]) / true[1:][later]
    assert rel.max() <= 2.0 ** -11 + 2.0 ** -12
    assert np.all((true[1:] * 64 >= true[:1])[later])  # the spread rule dropped the others
    path = tmp_path / "c.h5"
    with ProbabilityCache(str(path), META) as cache:
        cache.write("aachen/aachen_000000_000019", entry, uncovered=5)
        assert cache.has("aachen/aachen_000000_000019") and not cache.has("other")
    with ProbabilityCache(str(path), META, mode="r") as cache:
        assert cache.names() == ["aachen/aachen_000000_000019"]
        back, uncovered = cache.read("aachen/aachen_000000_000019")
        assert uncovered == 5 and back.first_shift == -2 and back.spread == 64.0
        for field in ("top_class", "first_code", "later_code"):
            assert np.array_equal(getattr(back, field), getattr(entry, field))
        first_class, first_code, shift = cache.read_first("aachen/aachen_000000_000019")
        assert np.array_equal(first_class, entry.top_class[0])
        assert np.array_equal(first_code, entry.first_code)
        assert 0 < cache.entry_nbytes("aachen/aachen_000000_000019") < prob.nbytes
        with pytest.raises(CacheError, match="no entry"):
            cache.read("missing")


def cached_round(scores, top, portion, first_shift=0, floor=0.0, spread=LATER_CLASS_SPREAD, ratio_steps=1024):
    """What a round does: encode, coarse histograms of the first-class codes, the refinement
    sweep over them, selection from the entries."""
    entries = [encode_top_classes(s, top=top, first_shift=first_shift, floor=floor, spread=spread,
                                  ratio_steps=ratio_steps) for s in scores]
    acc = ThresholdAccumulator(scores[0].shape[0])
    for e in entries:
        acc.update_codes(e.top_class[0], coarsen_codes(e.first_code, first_shift, 0))
    if first_shift < 0:
        refinement = CodeRefinement(acc, portion, first_shift)
        for e in entries:
            refinement.update_codes(e.top_class[0], e.first_code)
        k = refinement.thresholds()
    else:
        k = acc.thresholds(portion)
    return k, [select_from_top_classes(e.top_class, e.scores(), k) for e in entries]


def with_rare_classes(maps):
    """Class 16 never the argmax, class 17 the argmax of exactly one pixel."""
    for m in maps:
        m[16:18] = 0.0
    maps[0][:, 3, 5] = 1e-7
    maps[0][17, 3, 5] = 0.9
    return maps


@pytest.mark.parametrize("with_prior", [False, True])
@pytest.mark.parametrize("portion", [0.15, 0.5])
@pytest.mark.parametrize("kind", ["random", "structured"])
def test_cached_round_equals_the_exact_definition(kind, portion, with_prior):
    """Thresholds within 1e-3 relative of an exact sort; labels equal to full-precision selection
    under the exact thresholds on >= 99.99 % of pixels with the prior (the round's cache settings).
    Without the prior the size budget allows 11 bits for the first class and 2^-10 ratios,
    which the bound below reflects."""
    rng_prior = np.random.default_rng(7)
    prior = (0.9 * rng_prior.dirichlet(np.full(C, 0.3), size=(8, 16)) + 0.1 / C).transpose(2, 0, 1)
    if kind == "random":
        maps = [np.random.default_rng(s).dirichlet(np.full(C, 0.3), size=shape).transpose(2, 0, 1)
                .astype(np.float32) for s, shape in enumerate([(64, 128)] * 3 + [(256, 512)])]
    else:
        maps = [structured_scores((64, 128), s) for s in range(3)] + [structured_scores((256, 512), 9)]
    maps = with_rare_classes(maps)
    scores = [apply_spatial_prior(m, prior.astype(np.float32)) if with_prior else m for m in maps]
    if with_prior:
        settings = dict(top=DEFAULT_TOP_CLASSES, first_shift=PRIOR_FIRST_SHIFT)
    else:
        floor = float(dequantise_probability(quantise_probability(1.0 / C)))
        settings = dict(top=2, floor=floor, spread=1.0 / floor, first_shift=PLAIN_FIRST_SHIFT,
                        ratio_steps=PLAIN_RATIO_STEPS)
    k, labels = cached_round(scores, portion=portion, **settings)
    exact = exact_thresholds(scores, portion)
    assert exact[16] == 1.0 and exact[17] == 1.0 and k[16] == 1.0 and k[17] == 1.0
    ranked = exact >= 1e-6
    assert np.all(np.abs(k[ranked] - exact[ranked]) <= 1e-3 * exact[ranked])
    same = [(a == select_pseudo_labels(s, exact)).ravel() for a, s in zip(labels, scores)]
    agree = np.concatenate(same).mean()
    assert agree >= (0.9999 if with_prior else 0.9995), agree
    assert not np.isin(np.stack(labels[:3]), [16, 17]).any()


def test_without_prior_the_floor_is_lossless():
    maps = [random_map(shape=(19, 40, 60), seed=s) for s in range(3)]
    floor = float(dequantise_probability(quantise_probability(1.0 / 19)))
    k_floor, with_floor = cached_round(maps, 3, 0.5, floor=floor, spread=1.0 / floor)
    k_all, without = cached_round(maps, 3, 0.5, spread=1e6)
    assert np.array_equal(k_floor, k_all) and np.all(k_all >= floor)
    assert all(np.array_equal(a, b) for a, b in zip(with_floor, without))


def test_spread_rule_is_lossless_when_the_thresholds_allow_it():
    scores = dirichlet_scores(3, (48, 64), seed=2)
    k, everything = cached_round(scores, 4, 0.5, spread=1e6)
    acc = ThresholdAccumulator(C)
    for s in scores:
        acc.update(s)
    counts = acc.class_counts()
    spread = k[counts > 0].max() / k.min()
    assert spread_is_lossless(k, spread * 1.01, counts) and not spread_is_lossless(k, spread / 1.01, counts)
    for narrower, lossless in ((spread * 1.01, True), (1 + (spread - 1) / 4, False)):
        encoded = [encode_top_classes(s, top=4, spread=narrower) for s in scores]
        full = [encode_top_classes(s, top=4, spread=1e6) for s in scores]
        labels = [select_from_top_classes(e.top_class, f.scores(), k) for e, f in zip(encoded, full)]
        same = all(np.array_equal(a, b) for a, b in zip(labels, everything))
        assert same == lossless
        dropped = sum(int((e.top_class[1:] == 255).sum()) for e in encoded)
        assert dropped > 0


def test_format_version_is_in_the_metadata(tmp_path):
    path = tmp_path / "c.h5"
    with ProbabilityCache(str(path), META) as cache:
        cache.write("a", encode_top_classes(random_map()))
    with h5py.File(path, "a") as f:
        assert f.attrs["format_version"] == FORMAT_VERSION
        f.attrs["format_version"] = FORMAT_VERSION - 1
    with pytest.raises(CacheError, match=f"format_version: cache has {FORMAT_VERSION - 1}, "
                                         f"expected {FORMAT_VERSION}"):
        ProbabilityCache(str(path), META)


def test_second_class_floor():
    prob = np.array([[[0.7, 0.5]], [[0.25, 0.45]], [[0.05, 0.05]]], dtype=np.float32)
    entry = encode_top_classes(prob, top=2, floor=0.3)
    assert entry.top_class[:, 0].tolist() == [[0, 0], [255, 1]]
    assert entry.later_code[0, 0, 0] == 0 and entry.scores()[1, 0, 0] == 0
    # The first class is kept whatever its probability.
    assert encode_top_classes(prob, top=2, floor=0.9).top_class[0].tolist() == [[0, 0]]


def test_stale_metadata_is_refused_or_regenerated(tmp_path):
    path = tmp_path / "round1.h5"
    prob = random_map()
    with ProbabilityCache(str(path), META) as cache:
        cache.write("a", encode_top_classes(prob))
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
    entry = encode_top_classes(prob)
    top_class = entry.top_class
    with ProbabilityCache(str(path), META) as cache:
        cache.write("done", entry)
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
        cache.write("half", entry)  # replaced on rerun
        assert np.array_equal(cache.read("half")[0].top_class, top_class)


def test_corrupted_entry_is_refused(tmp_path):
    path = tmp_path / "c.h5"
    entry = encode_top_classes(random_map())
    with ProbabilityCache(str(path), META) as cache:
        cache.write("x", entry)
        cache.write("y", entry)
    with h5py.File(path, "a") as f:
        f["x/top_class"][0, 3, 3] = (int(entry.top_class[0, 3, 3]) + 1) % 4
        f["y/later_code_residual"][0, 3, 3] += 1  # the first-class sweep does not see it
    with ProbabilityCache(str(path), META) as cache:
        for read in (cache.read, cache.read_first):
            with pytest.raises(CacheError, match=r"c\.h5.*'x'.*CRC"):
                read("x")
        cache.read_first("y")
        with pytest.raises(CacheError, match=r"c\.h5.*'y'.*CRC"):
            cache.read("y")


def test_unreadable_file(tmp_path):
    path = tmp_path / "broken.h5"
    path.write_bytes(b"this is not HDF5")
    with pytest.raises(CacheError, match="broken.h5.*regenerate"):
        ProbabilityCache(str(path), META)
    with ProbabilityCache(str(path), META, regenerate=True) as cache:
        assert cache.names() == []
    with pytest.raises(CacheError, match="does not exist"):
        ProbabilityCache(str(tmp_path / "absent.h5"), META, mode="r")

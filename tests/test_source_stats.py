"""Eq. 4 class mean sizes, the spatial prior, the source-stats file and `mlsl-gluon stats`."""
import numpy as np
import pytest
from click.testing import CliRunner

from mlsl_gluon.cli import main
from mlsl_gluon.pseudo_labels import (
    SourceStatistics,
    class_mean_sizes,
    load_source_stats,
    save_source_stats,
    spatial_prior,
    spatial_prior_from_counts,
)


def tiny_labels():
    a = np.array([[0, 0, 1, 1],
                  [0, 0, 1, 255]], dtype=np.uint8)      # class 0: 4/8, class 1: 3/8
    b = np.array([[0, 2, 2, 2]], dtype=np.uint8)        # class 0: 1/4, class 2: 3/4
    c = np.full((3, 3), 255, dtype=np.uint8)            # nothing labelled
    return [a, b, c]


def test_eq4_known_answer_with_absent_class():
    sizes = class_mean_sizes(iter(tiny_labels()), 4)
    # class 0 in a and b: (4/8 + 1/4) / 2; class 1 only in a: 3/8; class 2 only in b: 3/4;
    # class 3 never occurs: 0. Ignore pixels count in H * W.
    assert sizes.tolist() == pytest.approx([0.375, 0.375, 0.75, 0.0])


def test_eq4_rejects_bad_ids():
    with pytest.raises(ValueError, match=r"\[7\]"):
        class_mean_sizes([np.array([[7, 0]], np.uint8)], 4)


def test_spatial_prior_known_answer():
    # grid (1, 2): left cell = columns 0-1, right = 2-3 (of a 4-wide map).
    a = np.array([[0, 0, 1, 1],
                  [0, 0, 1, 255]], dtype=np.uint8)
    counts = SourceStatistics(3, grid=(1, 2))
    counts.update(a)
    assert counts.class_cell_counts[:, 0, :].tolist() == [[4, 0], [0, 3], [0, 0]]
    prior = spatial_prior([a], 3, grid=(1, 2), alpha=1.0)
    # left: (4+1)/(4+3), (0+1)/7, (0+1)/7; right: 1/6, 4/6, 1/6.
    assert prior[:, 0, 0] == pytest.approx([5 / 7, 1 / 7, 1 / 7])
    assert prior[:, 0, 1] == pytest.approx([1 / 6, 4 / 6, 1 / 6])
    unsmoothed = spatial_prior_from_counts(counts.class_cell_counts, alpha=0.0)
    assert unsmoothed[:, 0, 1] == pytest.approx([0, 1, 0])
    # A cell without labelled pixels and no smoothing: uniform, not NaN.
    assert spatial_prior_from_counts(np.zeros((4, 1, 1)), alpha=0.0)[:, 0, 0] == pytest.approx([0.25] * 4)


def test_spatial_prior_shares_grid_across_sizes():
    # Class 0 on the top half, class 1 on the bottom, at two image sizes.
    small = np.repeat(np.array([[0], [1]], np.uint8), 4, axis=1)
    big = np.repeat(np.repeat(np.array([[0], [1]], np.uint8), 10, axis=0), 30, axis=1)
    prior = spatial_prior([small, big], 2, grid=(2, 3), alpha=0.0)
    assert np.allclose(prior[0, 0], 1) and np.allclose(prior[0, 1], 0)
    assert np.allclose(prior.sum(0), 1)


def test_stats_file_round_trip_and_errors(tmp_path):
    stats = SourceStatistics(4, grid=(2, 3))
    for label in tiny_labels():
        stats.update(label)
    path = tmp_path / "stats.npz"
    save_source_stats(str(path), stats.class_mean_sizes(), stats.spatial_prior(), num_classes=4,
                      grid=(2, 3), alpha=1.0, num_images=stats.num_images, source="tiny")
    loaded = load_source_stats(str(path))
    assert loaded["class_mean_sizes"].tolist() == pytest.approx([0.375, 0.375, 0.75, 0.0])
    assert loaded["spatial_prior"].shape == (4, 2, 3)
    assert (loaded["grid"], loaded["smoothing"], loaded["alpha"], loaded["num_images"]) == \
        ((2, 3), "additive", 1.0, 3)
    with pytest.raises(ValueError, match="num_classes=5"):
        save_source_stats(str(path), np.zeros(4), np.zeros((4, 2, 3)), num_classes=5, grid=(2, 3),
                          alpha=1.0, num_images=1)
    missing = tmp_path / "nothing.npz"
    with pytest.raises(ValueError, match="nothing.npz.*not found"):
        load_source_stats(str(missing))
    partial = tmp_path / "partial.npz"
    np.savez(partial, class_mean_sizes=np.zeros(4))
    with pytest.raises(ValueError, match="partial.npz.*missing fields"):
        load_source_stats(str(partial))
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match="garbage.npz"):
        load_source_stats(str(garbage))


def test_stats_cli_on_real_gta5_frame(real_samples, tmp_path):
    out = tmp_path / "gta5_stats.npz"
    result = CliRunner().invoke(main, ["stats", "--source", "gta5", "--data-root",
                                       str(real_samples / "gta5"), "--out", str(out), "--grid", "8x16"])
    assert result.exit_code == 0, result.output
    stats = load_source_stats(str(out))
    assert stats["num_images"] == 1 and stats["grid"] == (8, 16)
    sizes = stats["class_mean_sizes"]
    # Frame 00005 (tests/test_data readers): road ~42.2 %, sky ~20.8 % of the pixels.
    assert sizes[0] == pytest.approx(0.422, abs=0.01)
    assert sizes[10] == pytest.approx(0.208, abs=0.01)
    prior = stats["spatial_prior"]
    # Sky is likelier at the top rows of the grid than at the bottom; road the other way round.
    assert prior[10, 0].mean() > prior[10, -1].mean()
    assert prior[0, -1].mean() > prior[0, 0].mean()


def test_stats_cli_bad_root(tmp_path):
    result = CliRunner().invoke(main, ["stats", "--source", "synthia", "--data-root", str(tmp_path),
                                       "--out", str(tmp_path / "s.npz")])
    assert result.exit_code != 0
    assert str(tmp_path) in result.output

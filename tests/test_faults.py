"""Failures end in one clear line through the CLI, and nothing already computed is lost.

Every case goes through click's CliRunner on tiny generated data (width 1/16) and checks the exit
status, that the ``Error:`` line names the offending file, and what is left on disk.
"""
import errno
import json
import os
import socket
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest
from click.testing import CliRunner
from evaluation_helpers import OracleNet, make_net, oracle_image, save_gluon
from PIL import Image
from test_data_helpers import make_cityscapes, make_gta5, make_synthia, save_rgb, truncate

from mlsl_gluon.cli import DEBUG_ENV, main
from mlsl_gluon.data.classes import CITYSCAPES_PALETTE
from mlsl_gluon.evaluation import predict_labels
from mlsl_gluon.evaluation.tiling import axis_windows, tiled_predict_labels
from mlsl_gluon.evaluation.visualize import colorize
from mlsl_gluon.training.lock import RunLock, RunLockedError

# pseudo-label without source statistics (single inference, no spatial prior, no weak labels), at
# the tiny images' own size instead of the default 2048-pixel longer side.
CBST = ["--source", "gta5", "--method", "cbst", "--no-spatial-prior", "--longer-side", "64"]


def run(*args, env=None):
    return CliRunner(mix_stderr=False).invoke(main, [str(a) for a in args], env=env)


def error_line(result):
    """The single ``Error:`` line of a failed command (progress bars may precede it)."""
    lines = [line for line in result.stderr.replace("\r", "\n").splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr + result.stdout
    return lines[0]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faults_weights")
    net = make_net(19)
    return net, save_gluon(net, tmp / "net.params")


# ---- the error boundary ---------------------------------------------------------------------

def test_out_under_a_regular_file_is_one_line_and_debug_shows_the_traceback(tmp_path):
    from mlsl_gluon.preflight import OutputError

    root = make_gta5(tmp_path / "GTA5", count=1)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    args = ["prepare", "list", "--dataset", "gta5", "--root", root, "--out", blocker / "list.txt"]
    result = run(*args)
    assert result.exit_code == 1
    line = error_line(result)
    assert str(blocker / "list.txt") in line and "regular file" in line and "choose another --out" in line
    assert isinstance(run("--debug", *args).exception, OutputError)
    assert isinstance(run(*args, env={DEBUG_ENV: "1"}).exception, OutputError)
    assert blocker.read_text() == "not a folder"


def test_os_errors_while_writing_are_one_line_naming_the_file(tmp_path, monkeypatch):
    import mlsl_gluon.data.prepare as prep

    root = make_gta5(tmp_path / "GTA5", count=1)
    out = tmp_path / "list.txt"

    def disk_full(path, pairs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(prep, "write_list_file", disk_full)
    result = run("prepare", "list", "--dataset", "gta5", "--root", root, "--out", out)
    assert result.exit_code == 1
    assert error_line(result) == (f"Error: {out}: No space left on device; free disk space, then run the "
                                  "same command again (add --resume for train)")
    assert isinstance(run("--debug", "prepare", "list", "--dataset", "gta5", "--root", root, "--out",
                          out).exception, OSError)


def test_read_only_out_is_refused_before_any_work(tmp_path, monkeypatch):
    import tempfile

    from mlsl_gluon.preflight import check_output_folder

    # As root (CI containers) chmod does not stop writes, so the OS refusal is simulated.
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(ValueError, match=f"{tmp_path / 'run'}: cannot write in {tmp_path} "
                                         r"\(Permission denied\); check its permissions"):
        check_output_folder(tmp_path / "run")
    root = make_gta5(tmp_path / "GTA5", count=1)
    result = run("stats", "--source", "gta5", "--data-root", root, "--out", tmp_path / "s.npz")
    assert result.exit_code == 1 and "cannot write in" in error_line(result)


def test_usage_errors_keep_status_2(tmp_path):
    result = run("prepare", "list", "--dataset", "gta5", "--root", tmp_path)
    assert result.exit_code == 2 and "--out" in result.stderr


# ---- unreadable dataset files in every command ------------------------------------------------

def test_stats_on_a_truncated_gta5_label_names_it(tmp_path):
    root = make_gta5(tmp_path / "GTA5", count=2)
    truncate(root / "labels" / "00002.png", keep=0.4)
    out = tmp_path / "stats.npz"
    result = run("stats", "--source", "gta5", "--data-root", root, "--out", out)
    assert result.exit_code == 1
    assert str(root / "labels" / "00002.png") in error_line(result)
    assert not out.exists()


def test_stats_on_an_8bit_synthia_label_names_it(tmp_path):
    root = make_synthia(tmp_path / "SYNTHIA", count=2)
    bad = root / "GT" / "LABELS" / "0000001.png"
    Image.fromarray(np.zeros((30, 46), np.uint8), mode="L").save(bad)
    result = run("stats", "--source", "synthia", "--data-root", root, "--out", tmp_path / "s.npz")
    assert result.exit_code == 1
    line = error_line(result)
    assert str(bad) in line and "uint16 with 3 channels" in line


def test_evaluate_on_a_wrong_size_val_label_names_it(tmp_path, weights):
    _, path = weights
    root = make_cityscapes(tmp_path / "cs", split="val", cities=("lindau",), per_city=2)
    bad = root / "gtFine" / "val" / "lindau" / "lindau_000001_000019_gtFine_labelIds.png"
    Image.fromarray(np.zeros((10, 12), np.uint8), mode="L").save(bad)
    result = run("evaluate", "--weights", path, "--data-root", root, "--out", tmp_path / "eval")
    assert result.exit_code == 1
    assert str(bad) in error_line(result)


def test_pseudo_label_on_a_zero_byte_image_names_it(tmp_path, weights):
    _, path = weights
    root = make_cityscapes(tmp_path / "cs", cities=("aachen",), per_city=2, labels=False)
    bad = root / "leftImg8bit" / "train" / "aachen" / "aachen_000001_000019_leftImg8bit.png"
    bad.write_bytes(b"")
    result = run("pseudo-label", "--weights", path, "--data-root", root, "--round", 1, "--portion", 0.2,
                 *CBST, "--out", tmp_path / "round")
    assert result.exit_code == 1
    assert str(bad) in error_line(result)


# ---- one process per run folder ---------------------------------------------------------------

def _write_lock(folder, pid, host):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "LOCK").write_text(json.dumps({"pid": pid, "host": host, "start_time": None,
                                             "since": "earlier"}))


def test_lock_refuses_a_live_owner_and_takes_over_a_dead_one(tmp_path):
    out = tmp_path / "run"
    _write_lock(out, os.getppid(), socket.gethostname())  # the test runner's parent: alive
    with pytest.raises(RunLockedError, match=f"in use by PID {os.getppid()} on host"):
        RunLock(out).acquire()
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
    _write_lock(out, int(finished.stdout), socket.gethostname())  # that process has exited
    with RunLock(out) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not (out / "LOCK").exists()


def test_lock_held_by_a_running_process_then_freed_by_its_death(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom mlsl_gluon.training.lock import RunLock\n"
         f"RunLock({str(out)!r}).acquire()\nprint('held', flush=True)\ntime.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=f"{out} is in use by PID {holder.pid} on host"):
            RunLock(out).acquire()
    finally:
        holder.kill()
        holder.wait()
    with RunLock(out):  # SIGKILL left the file behind; its PID is gone, so it is stale
        assert json.loads((out / "LOCK").read_text())["pid"] == os.getpid()


def test_lock_of_another_host_needs_an_explicit_break(tmp_path):
    out = tmp_path / "run"
    _write_lock(out, 12345, "some-other-host")
    with pytest.raises(RunLockedError, match="--break-lock"):
        RunLock(out).acquire()
    with RunLock(out, break_foreign=True):
        assert json.loads((out / "LOCK").read_text())["host"] == socket.gethostname()


# ---- tiled inference ------------------------------------------------------------------------

class NeighbourhoodNet:
    """Stand-in network whose output at a pixel depends on its 5x5 neighbourhood only."""

    def __init__(self, num_classes=5, seed=0):
        rng = np.random.default_rng(seed)
        self.weight = mx.nd.array(rng.normal(size=(num_classes, 3, 5, 5)))
        self.num_classes = num_classes

    def predict(self, x, flip=False):
        if flip:
            return 0.5 * (self.predict(x) + self.predict(x.flip(axis=3)).flip(axis=3))
        logits = mx.nd.Convolution(x, self.weight.as_in_context(x.context), kernel=(5, 5), pad=(2, 2),
                                   num_filter=self.num_classes, no_bias=True)
        return mx.nd.softmax(logits, axis=1)


def test_axis_windows_partition_the_axis_inside_fixed_size_windows():
    for length, tile, margin in [(100, 40, 8), (97, 40, 5), (64, 64, 16), (300, 129, 32)]:
        windows = axis_windows(length, tile, margin)
        covered = np.zeros(length, int)
        for start, core_start, core_stop in windows:
            assert 0 <= start <= core_start < core_stop <= start + min(tile, length) <= length
            covered[core_start:core_stop] += 1
        assert (covered == 1).all()
    with pytest.raises(ValueError, match="no core"):
        axis_windows(100, 20, 8)


def test_tiles_equal_whole_image_inference_where_both_fit():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(70, 93, 3), dtype=np.uint8)
    local = NeighbourhoodNet()
    whole = predict_labels(local, [image], [mx.cpu()], flip=True)[0]
    for tile in [(32, 40), (48, 93), (70, 33)]:
        tiled = tiled_predict_labels(local, image, [mx.cpu()], tile=tile, margin=8, progress=False)
        np.testing.assert_array_equal(tiled, whole)
    # Without context around the cores the stitching shows, so the comparison above can fail.
    cut = tiled_predict_labels(local, image, [mx.cpu()], tile=(32, 40), margin=0, progress=False)
    assert (cut != whole).any()
    oracle_ids = rng.integers(0, 19, size=(70, 93)).astype(np.uint8)
    stitched = tiled_predict_labels(OracleNet(19), oracle_image(oracle_ids), [mx.cpu()], tile=(40, 40),
                                    margin=8, progress=False)
    np.testing.assert_array_equal(stitched, oracle_ids)


def test_image_within_one_tile_is_segmented_whole(weights):
    net, _ = weights
    image = np.random.default_rng(1).integers(0, 256, size=(45, 61, 3), dtype=np.uint8)
    expected = predict_labels(net, [image], [mx.cpu()], flip=True)[0]
    np.testing.assert_array_equal(tiled_predict_labels(net, image, [mx.cpu()], progress=False), expected)


def test_predict_command_tiles_big_images_and_keeps_earlier_outputs(tmp_path, weights):
    net, path = weights
    rng = np.random.default_rng(2)
    small, big, cut = tmp_path / "small.png", tmp_path / "big.png", tmp_path / "cut.png"
    save_rgb(small, rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8))
    save_rgb(big, rng.integers(0, 256, size=(72, 96, 3), dtype=np.uint8))
    save_rgb(cut, rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8))
    truncate(cut, keep=0.5)  # the header still reads: found only when decoded
    not_png = tmp_path / "not_png.png"
    not_png.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    out = tmp_path / "out"
    refused = run("predict", small, not_png, "--weights", path, "--out", out)
    assert refused.exit_code == 1 and str(not_png) in error_line(refused)
    assert not out.exists()  # checked before the network is built
    result = run("predict", small, big, cut, "--weights", path, "--out", out, "--tile", "48,64",
                 "--tile-margin", 8, "--no-progress")
    assert result.exit_code == 1
    assert str(cut) in error_line(result)
    assert (out / "small_pred.png").is_file() and (out / "big_pred.png").is_file()
    image = np.array(Image.open(big))
    expected = tiled_predict_labels(net, image, [mx.cpu()], tile=(48, 64), margin=8, progress=False)
    written = np.array(Image.open(out / "big_pred.png").convert("RGB"))
    np.testing.assert_array_equal(written, colorize(expected, CITYSCAPES_PALETTE))
    assert "tile/s" not in result.stderr and "it/s" not in result.stderr  # --no-progress: no bar
    too_wide = run("predict", small, "--weights", path, "--out", out, "--tile", "48,64")
    assert too_wide.exit_code == 2 and "--tile-margin" in too_wide.stderr


# ---- dataset checks agree with the readers ----------------------------------------------------

def test_prepare_check_val_without_gtfine_is_an_error(tmp_path):
    root = make_cityscapes(tmp_path / "cs", split="val", cities=("lindau",), per_city=1, labels=False)
    result = run("prepare", "check", "--dataset", "cityscapes", "--root", root, "--split", "val")
    assert result.exit_code == 1 and "gtFine/val" in result.stdout
    train = make_cityscapes(tmp_path / "cs", split="train", cities=("aachen",), per_city=1, labels=False)
    assert run("prepare", "check", "--dataset", "cityscapes", "--root", train).exit_code == 0


def test_jpeg_named_png_image_is_read_by_both_and_label_refused_by_both(tmp_path):
    from mlsl_gluon.data import GTA5, DatasetError

    root = make_gta5(tmp_path / "GTA5", count=2)
    image_path = root / "images" / "00001.png"
    image = np.array(Image.open(image_path))
    Image.fromarray(image).save(image_path, format="JPEG", quality=95)
    checked = run("prepare", "check", "--dataset", "gta5", "--root", root, "--decode")
    assert checked.exit_code == 0 and "JPEG data under a .png name" in checked.stdout
    assert GTA5(root, frame_size=(64, 40))[0][0].shape == image.shape
    label_path = root / "labels" / "00002.png"
    Image.open(label_path).convert("L").save(label_path, format="JPEG")
    checked = run("prepare", "check", "--dataset", "gta5", "--root", root)
    assert checked.exit_code == 1 and f"label {label_path}: unreadable or truncated PNG" in checked.stdout
    with pytest.raises(DatasetError, match="holds JPEG data, not PNG"):
        GTA5(root).read_label(1)
    result = run("stats", "--source", "gta5", "--data-root", root, "--out", tmp_path / "s.npz")
    assert result.exit_code == 1 and str(label_path) in error_line(result)


def test_rgb_gta5_label_in_stats_names_it_and_says_what_to_use(tmp_path):
    root = make_gta5(tmp_path / "GTA5", count=1)
    label_path = root / "labels" / "00001.png"
    Image.open(label_path).convert("RGB").save(label_path)
    result = run("stats", "--source", "gta5", "--data-root", root, "--out", tmp_path / "s.npz")
    assert result.exit_code == 1
    line = error_line(result)
    assert str(label_path) in line and "original label files" in line


# ---- train: inputs and run folders ------------------------------------------------------------

@pytest.fixture(scope="module")
def smoke(smoke_synthia, reproduce_tool):
    """The shared tiny SYNTHIA -> Cityscapes data and width-1/16 source model, one-round smoke sizes.

    Tests that damage a data file restore it before they end."""
    data, weights = smoke_synthia
    return data.parent, data, weights, [*reproduce_tool.SMOKE_SIZES, "rounds.num_rounds=1"]


def train(smoke, out, *extra, sizes=None):
    root, data, weights, smoke_sizes = smoke
    settings = [a for s in (smoke_sizes if sizes is None else sizes) for a in ("--set", s)]
    return run("train", "--source", "synthia", "--method", "cbst", "--data-root", data, "--weights", weights,
               "--out", out, "--no-progress", *settings, *extra)


@pytest.mark.parametrize("bad, reason", [
    ("model.width=0", "model.width must be a positive number"),
    ("train.lr=-1e-4", "train.lr must be a positive number"),
    ("pseudo_label.portion_start=1.5", "pseudo_label.portion_start must be a fraction (0.0, 1.0]"),
    ("rounds.epochs_per_round=-1", "rounds.epochs_per_round must be a count >= 1"),
    ("eval.scales=[1.0, 0]", "eval.scales must be a positive number"),
])
def test_out_of_range_config_fails_before_the_run_folder(smoke, tmp_path, bad, reason):
    out = tmp_path / "run"
    result = train(smoke, out, "--set", bad)
    assert result.exit_code == 1
    line = error_line(result)
    assert f"--set {bad}" in line and reason in line
    assert not out.exists()


def test_second_process_on_one_out_is_refused_at_once(smoke, tmp_path):
    out = tmp_path / "run"
    _write_lock(out, os.getppid(), socket.gethostname())
    result = train(smoke, out)
    assert result.exit_code == 1
    assert f"{out} is in use by PID {os.getppid()} on host {socket.gethostname()}" in error_line(result)
    assert sorted(p.name for p in out.iterdir()) == ["LOCK"]  # nothing written


def test_first_start_failing_before_training_does_not_block_the_fixed_command(smoke, tmp_path):
    root, data, weights, sizes = smoke
    image = sorted((data / "Cityscapes" / "leftImg8bit" / "train").rglob("*.png"))[1]
    original = image.read_bytes()
    out = tmp_path / "run"
    try:
        truncate(image, keep=0.3)  # found only when step 1 decodes it
        first = train(smoke, out)
        assert first.exit_code == 1 and str(image) in error_line(first)
        assert (out / "config.yaml").is_file() and not (out / "LOCK").exists()
    finally:
        image.write_bytes(original)
    cache = out / "round_00" / "pseudo" / "probabilities.h5"
    truncate(cache, keep=0.3)  # as a kill or a full disk can leave it
    second = train(smoke, out)  # the same command once the file is fixed, without --resume
    assert second.exit_code == 0, second.stderr
    assert (out / "DONE").is_file() and cache.with_name("probabilities.h5.damaged").is_file()


def test_missing_source_statistics_fail_before_the_run_folder(smoke, tmp_path):
    out, stats = tmp_path / "run", tmp_path / "missing_stats.npz"
    result = train(smoke, out, "--set", "pseudo_label.spatial_prior=true",
                   "--set", f"pseudo_label.source_stats={stats}")
    assert result.exit_code == 1 and str(stats) in error_line(result)
    assert not out.exists()


def test_nan_stop_resumes_with_a_lower_lr_and_rebuilds_a_deleted_pseudo_label(smoke, tmp_path):
    out = tmp_path / "run"
    stopped = train(smoke, out, "--set", "train.lr=1e12")
    assert stopped.exit_code == 1
    line = error_line(stopped)
    assert "non-finite" in line and str(out / "checkpoints" / "latest.params") in line and "--resume" in line
    labels = sorted((out / "round_00" / "pseudo" / "labels").rglob("*.png"))
    kept = labels[0].read_bytes()
    labels[0].unlink()
    resumed = train(smoke, out, "--resume", "--set", "train.lr=1e-4")
    assert resumed.exit_code == 0, resumed.stderr
    assert labels[0].read_bytes() == kept  # rebuilt from the cache, identical
    assert not (out / "attempt_1").exists()  # a training-only change keeps step 1's results
    assert "%|" not in resumed.stderr  # --no-progress: no bar of any step
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    change = ["train.lr: 1000000000000.0 != 0.0001"]
    assert [r["changes"] for r in records if r["event"] == "config_changed"] == [change]
    assert json.loads((out / "run.json").read_text())[-1]["config_changes"] == change
    assert "lr: 0.0001" in (out / "config.yaml").read_text() and (out / "DONE").is_file()
    assert [r["event"] for r in records].count("stopped") == 1
    final = (out / "final.params").read_bytes()
    refused = train(smoke, out, "--resume", "--set", "train.lr=1e-4", "--set", "experiment.seed=1")
    assert refused.exit_code == 1
    assert "experiment.seed: 0 != 1" in error_line(refused) and "already computed" in error_line(refused)
    assert (out / "final.params").read_bytes() == final


def test_damaged_pseudo_label_cache_names_the_file_and_regenerate_recovers(tmp_path, weights):
    _, path = weights
    root = make_cityscapes(tmp_path / "cs", cities=("aachen",), per_city=2, labels=False)
    out = tmp_path / "round"
    args = ["pseudo-label", "--weights", path, "--data-root", root, "--round", 1, "--portion", 0.2,
            *CBST, "--out", out]
    quiet = run(*args, "--no-progress")
    assert quiet.exit_code == 0 and "%|" not in quiet.stderr
    cache = out / "probabilities.h5"
    labels = sorted((out / "labels").rglob("*.png"))
    before = [p.read_bytes() for p in labels]
    truncate(cache, keep=0.3)
    (out / "stats.json").unlink()  # as a kill before the round finished leaves it
    result = run(*args)
    assert result.exit_code == 1
    line = error_line(result)
    assert str(cache) in line and "--regenerate" in line and "delete" not in line
    assert [p.read_bytes() for p in labels] == before  # the labels already written are kept
    assert run(*args, "--regenerate").exit_code == 0
    assert [p.read_bytes() for p in labels] == before


def test_weights_of_another_width_fail_before_the_run_folder(smoke, tmp_path):
    out = tmp_path / "run"
    sizes = [s for s in smoke[3] if not s.startswith("model.width")] + ["model.width=0.125"]
    result = train(smoke, out, sizes=sizes)
    assert result.exit_code == 1
    line = error_line(result)
    assert str(smoke[2]) in line and "width 0.0625" in line and "model.width is 0.125" in line
    assert not out.exists()


@pytest.mark.parametrize("damage, reason", [
    (lambda data: b"", "empty file (0 bytes)"),
    (lambda data: data[: len(data) // 3], "truncated or corrupted MXNet .params file"),
    (lambda data: bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
     "not an MXNet .params weights file"),
])
def test_damaged_weights_give_the_reason_in_every_command(tmp_path, weights, damage, reason):
    _, path = weights
    bad = tmp_path / "bad.params"
    bad.write_bytes(damage(path.read_bytes()))
    image = tmp_path / "img.png"
    save_rgb(image, np.zeros((16, 16, 3), np.uint8))
    root = make_cityscapes(tmp_path / "cs", split="val", cities=("lindau",), per_city=1)
    for args in (["evaluate", "--data-root", root, "--out", tmp_path / "e"],
                 ["predict", image, "--out", tmp_path / "p"],
                 ["export", "--format", "symbol", "--out", tmp_path / "x" / "net"],
                 ["pseudo-label", *CBST, "--data-root", root, "--split", "val", "--round", 0,
                  "--portion", 0.2, "--out", tmp_path / "r"]):
        result = run(*args, "--weights", bad)
        assert result.exit_code == 1, args
        line = error_line(result)
        assert str(bad) in line and reason in line and "Traceback" not in line, args


def test_out_under_a_regular_file_is_refused_by_every_command_before_any_work(smoke, tmp_path, weights):
    _, path = weights
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    under = blocker / "out"
    image = tmp_path / "img.png"
    save_rgb(image, np.zeros((16, 16, 3), np.uint8))
    cs = make_cityscapes(tmp_path / "cs", split="val", cities=("lindau",), per_city=1)
    gta = make_gta5(tmp_path / "GTA5", count=1)
    commands = {
        "train": None,
        "evaluate": ["evaluate", "--weights", path, "--data-root", cs, "--out", under],
        "predict": ["predict", image, "--weights", path, "--out", under],
        "export": ["export", "--weights", path, "--format", "onnx", "--out", under / "net"],
        "pseudo-label": ["pseudo-label", *CBST, "--weights", path, "--data-root", cs, "--split", "val",
                         "--round", 0, "--portion", 0.2, "--out", under],
        "stats": ["stats", "--source", "gta5", "--data-root", gta, "--out", under / "s.npz"],
        "prepare list": ["prepare", "list", "--dataset", "gta5", "--root", gta, "--out", under / "l.txt"],
    }
    for name, args in commands.items():
        result = train(smoke, under) if args is None else run(*args)
        assert result.exit_code == 1, name
        line = error_line(result)
        assert str(under) in line and f"lies under the regular file {blocker}" in line, (name, line)
    assert blocker.read_text() == "x"


def test_resume_mid_epoch_with_a_new_lr_trains_with_it(smoke, tmp_path, monkeypatch):
    import mlsl_gluon.training.stage as stage
    from mlsl_gluon.config import load_config
    from mlsl_gluon.training.experiment import run_experiment

    root, data, weights, sizes = smoke
    out = tmp_path / "run"

    class Boom(RuntimeError):
        pass

    def fault(event, **info):
        if event == "iteration" and info["iteration"] == 2:  # after the checkpoint at iteration 2
            raise Boom

    def config(lr):
        return load_config(overrides=[*sizes, f"train.lr={lr}"], source="synthia", method="cbst")

    with pytest.raises(Boom):
        run_experiment(config(1e-4), data, weights, out, [mx.cpu()], on_event=fault, progress=False)
    used = []
    real_train_epoch = stage.train_epoch

    def recording(net, trainer, *args, **kwargs):
        used.append(trainer.learning_rate)
        return real_train_epoch(net, trainer, *args, **kwargs)

    monkeypatch.setattr(stage, "train_epoch", recording)
    run_experiment(config(3e-5), data, weights, out, [mx.cpu()], resume=True, progress=False)
    assert used == [pytest.approx(3e-5)]  # not the 1e-4 the loaded trainer states hold
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    changes = [r["changes"] for r in records if r["event"] == "config_changed"]
    assert changes == [["train.lr: 0.0001 != 3e-05"]]

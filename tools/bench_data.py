#!/usr/bin/env python
"""Data throughput: frames per second reading + TrainTransform on real-size GTA5 frames.

The real sample frame 00005 (1914x1052, palette label) is replicated into a temporary GTA5 tree
(symlinks, so every read decodes the full PNG from the page cache) and read through a Gluon
DataLoader with 0 and 2 worker processes; each configuration is timed over several full passes
and the median is reported. A single-process breakdown (PNG decoding vs. transform) is printed
too. The last line of the output is one JSON object.

    OMP_NUM_THREADS=1 .venv/bin/python tools/bench_data.py --frames 40 --runs 3
"""
import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from mxnet import gluon

from mlsl_gluon.data import GTA5, TrainTransform

PROJECT = Path(__file__).resolve().parents[1]
DEFAULT_SAMPLE = PROJECT.parent / "shared" / "data" / "real_samples" / "gta5"


def replicate_frame(sample_root, out_root, frames):
    """GTA5 tree with ``frames`` copies (symlinks) of the sample's frame 00005."""
    (out_root / "images").mkdir(parents=True)
    (out_root / "labels").mkdir()
    for i in range(1, frames + 1):
        (out_root / "images" / f"{i:05d}.png").symlink_to(sample_root / "images" / "00005.png")
        (out_root / "labels" / f"{i:05d}.png").symlink_to(sample_root / "labels" / "00005.png")
    return out_root


def time_loader(dataset, workers, batch_size):
    """Seconds for one full pass of a DataLoader (the worker pool is started before timing)."""
    loader = gluon.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, last_batch="keep",
                                   num_workers=workers)
    start = time.perf_counter()
    seen = 0
    for images, labels in loader:
        assert images.dtype == np.float32 and labels.dtype == np.float32
        seen += images.shape[0]
    elapsed = time.perf_counter() - start
    assert seen == len(dataset)
    del loader
    return elapsed


def breakdown(dataset, transform, count):
    """Median milliseconds per frame of decoding (image + label) and of the transform alone,
    as wall-clock and as CPU time of this process (the latter barely depends on machine load)."""
    wall = {"read": [], "transform": []}
    cpu = {"read": [], "transform": []}
    rng = np.random.default_rng(0)
    for idx in range(count):
        w0, c0 = time.perf_counter(), time.process_time()
        image, label, _ = dataset[idx]
        w1, c1 = time.perf_counter(), time.process_time()
        transform(image, label, rng=rng)
        w2, c2 = time.perf_counter(), time.process_time()
        wall["read"].append(1000 * (w1 - w0))
        wall["transform"].append(1000 * (w2 - w1))
        cpu["read"].append(1000 * (c1 - c0))
        cpu["transform"].append(1000 * (c2 - c1))
    return ({k: statistics.median(v) for k, v in wall.items()},
            {k: statistics.median(v) for k, v in cpu.items()})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample-root", type=Path, default=DEFAULT_SAMPLE,
                        help="GTA5 folder holding images/00005.png and labels/00005.png")
    parser.add_argument("--frames", type=int, default=40, help="frames in the temporary tree")
    parser.add_argument("--runs", type=int, default=3, help="timed passes per configuration")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--crop-size", type=int, default=504)
    parser.add_argument("--cv2-threads", type=int, default=1,
                        help="OpenCV threads per process (1: workers do not oversubscribe the cores)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cv2.setNumThreads(args.cv2_threads)
    if not (args.sample_root / "images" / "00005.png").is_file():
        raise SystemExit(f"GTA5 sample frame not found under {args.sample_root}")

    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        dataset = GTA5(replicate_frame(args.sample_root, Path(tmp) / "gta5", args.frames))
        transform = TrainTransform(crop_size=args.crop_size)
        wall_ms, cpu_ms = breakdown(dataset, transform, min(10, args.frames))
        print(f"single process, per frame (median of {min(10, args.frames)}): read {wall_ms['read']:.1f} ms "
              f"(CPU {cpu_ms['read']:.1f} ms), TrainTransform {wall_ms['transform']:.1f} ms "
              f"(CPU {cpu_ms['transform']:.1f} ms)")
        # One generator per item, as the training set does: the crops do not depend on the worker.
        transformed = dataset.transform(lambda image, label: transform(image, label, np.random.default_rng()))
        results = {workers: [] for workers in args.workers}
        load_before = os.getloadavg()[0]
        # Configurations alternate within each run so that a change in machine load (shared
        # cores) affects all of them alike.
        for _ in range(args.runs):
            for workers in args.workers:
                results[workers].append(args.frames / time_loader(transformed, workers, args.batch_size))
        load_after = os.getloadavg()[0]
        for workers, fps in results.items():
            print(f"workers={workers}: median {statistics.median(fps):.2f} frames/s "
                  f"(runs: {', '.join(f'{f:.2f}' for f in fps)})")
        print(f"1-min load average before/after: {load_before:.2f} / {load_after:.2f} "
              f"on {os.cpu_count()} cores")

    print(json.dumps({
        "benchmark": "gta5_read_plus_train_transform",
        "frame_size": [1914, 1052], "crop_size": args.crop_size, "frames": args.frames,
        "runs": args.runs, "batch_size": args.batch_size, "cpu_count": os.cpu_count(),
        "cv2_threads": args.cv2_threads, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average_before_after": [round(load_before, 2), round(load_after, 2)],
        "single_process_wall_ms": {k: round(v, 2) for k, v in wall_ms.items()},
        "single_process_cpu_ms": {k: round(v, 2) for k, v in cpu_ms.items()},
        "fps_median": {str(w): round(statistics.median(f), 3) for w, f in results.items()},
        "fps_runs": {str(w): [round(x, 3) for x in f] for w, f in results.items()},
    }))


if __name__ == "__main__":
    main()

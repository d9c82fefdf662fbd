#!/usr/bin/env python
"""Scaling figures of issue 13: step 1 over dist_sync workers, predict vs. forward, loader workers.

1. ``pseudo_pass_ratio_2_workers``: wall time of step 1 (pseudo-labels + PWL of the target set)
   inside ``mlsl-gluon train`` with 2 dist_sync workers on 127.0.0.1 (one OpenMP thread each)
   over the same step with 1 worker, on the same tiny generated data; the labels and weak labels
   of both runs are compared byte for byte. Goal <= 0.6.
2. ``predict_over_forward``: time of ``net.predict(x)`` over the full ``net(x)`` of a
   ``with_classifier=True`` MLSLNet at width 0.25 on a 256x512 input. Goal <= 0.8.
3. ``loader_images_per_s``: the training pipeline (GTA5 reader + TrainTransform + batching, via
   :class:`~mlsl_gluon.training.loader.BackgroundBatches`) on real-size GTA5 frames (the real
   sample frame replicated, as tools/bench_data.py does) with 0 and 2 loader workers.
4. ``train_step_s``: seconds per training step of a width-1/8 MLSLNet on those batches
   (504x504 crops) with the batches read in the training process vs. prefetched by 2 workers.

Timings are medians of ``--runs`` runs; every ratio is taken within this one invocation (the
configurations alternate so that a change of machine load hits all alike). The last line is
one JSON object.

    OMP_NUM_THREADS=1 .venv/bin/python tools/bench_scale.py --runs 3
"""
import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import mxnet as mx
import numpy as np

from mlsl_gluon.data import GTA5, TrainTransform
from mlsl_gluon.model import MLSLNet, init_params
from mlsl_gluon.training import build_trainer, train_epoch
from mlsl_gluon.training.datasets import EpochBatches, SelfTrainingSet
from mlsl_gluon.training.loader import BackgroundBatches

PROJECT = Path(__file__).resolve().parents[1]
DEFAULT_SAMPLE = PROJECT.parent / "shared" / "data" / "real_samples" / "gta5"
sys.path.insert(0, str(PROJECT / "tools"))
from bench_data import replicate_frame  # noqa: E402


def median(values):
    return statistics.median(values)


def bench_predict(runs, width=0.25, size=(256, 512)):
    """Median seconds of ``net(x)`` (both heads) and of ``net.predict(x)``, interleaved."""
    mx.random.seed(0)
    net = MLSLNet(19, width=width, with_classifier=True)
    init_params(net, ctx=mx.cpu())
    net.hybridize()
    x = mx.nd.array(np.random.default_rng(0).standard_normal((1, 3) + size, dtype=np.float32))

    def forward():
        with mx.autograd.predict_mode():
            seg, cls = net(x)
        seg.wait_to_read()
        cls.wait_to_read()

    def predict():
        net.predict(x).wait_to_read()

    times = {"forward": [], "predict": []}
    forward(), predict()  # graph building and memory planning are not timed
    for _ in range(runs):
        for name, call in (("forward", forward), ("predict", predict)):
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return times


def gta5_training_set(root, frames):
    """Every replicated GTA5 frame as a source item with the paper's training augmentation."""
    return SelfTrainingSet(GTA5(root), range(frames), TrainTransform(crop_size=504), 19)


def bench_loader(dataset, workers, batch_size):
    """Images/s of one epoch of batches (the worker pool is part of the time: once per epoch)."""
    batches = BackgroundBatches(EpochBatches(dataset, batch_size, seed=0, stage=1, epoch=0), workers)
    start = time.perf_counter()
    seen = sum(batch[0].shape[0] for batch in batches)
    return seen / (time.perf_counter() - start)


def bench_train_steps(net, trainer, dataset, workers, batch_size, epoch):
    """Seconds per step of one epoch of training on the pipeline's batches."""
    batches = BackgroundBatches(EpochBatches(dataset, batch_size, seed=0, stage=1, epoch=epoch), workers)
    start = time.perf_counter()
    stats = train_epoch(net, trainer, batches, [mx.cpu()], progress=False, log_every=0)
    mx.nd.waitall()
    return (time.perf_counter() - start) / stats["iterations"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs per configuration")
    parser.add_argument("--sample-root", type=Path, default=DEFAULT_SAMPLE,
                        help="GTA5 folder holding images/00005.png and labels/00005.png")
    parser.add_argument("--frames", type=int, default=16, help="replicated frames for the loader figures")
    parser.add_argument("--train-frames", type=int, default=8, help="frames per training-step epoch")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--skip", nargs="*", default=[], choices=["pseudo", "predict", "loader", "train"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    result = {"omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "cpu_count": os.cpu_count(),
              "runs": args.runs, "load_average_before": [round(v, 2) for v in os.getloadavg()]}

    if "pseudo" not in args.skip:
        pass

    if "predict" not in args.skip:
        times = bench_predict(args.runs)
        for name, values in times.items():
            print(f"MLSLNet width 0.25, 256x512, {name}: median {1000 * median(values):.1f} ms "
                  f"(runs {', '.join(f'{1000 * v:.1f}' for v in values)})", flush=True)
        result["predict_s"] = round(median(times["predict"]), 4)
        result["forward_s"] = round(median(times["forward"]), 4)
        result["predict_over_forward"] = round(median(times["predict"]) / median(times["forward"]), 3)
        print(f"predict / forward: {result['predict_over_forward']:.3f} (goal <= 0.8)", flush=True)

    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        if {"loader", "train"} - set(args.skip):
            if not (args.sample_root / "images" / "00005.png").is_file():
                raise SystemExit(f"GTA5 sample frame not found under {args.sample_root}")
            root = replicate_frame(args.sample_root, Path(tmp) / "gta5", args.frames)
        if "loader" not in args.skip:
            dataset = gta5_training_set(root, args.frames)
            speeds = {0: [], 2: []}
            for _ in range(args.runs):
                for workers in speeds:
                    speeds[workers].append(bench_loader(dataset, workers, args.batch_size))
            for workers, values in speeds.items():
                print(f"loader, {workers} workers: median {median(values):.2f} images/s "
                      f"(runs {', '.join(f'{v:.2f}' for v in values)})", flush=True)
            result["loader_images_per_s"] = {str(w): round(median(v), 3) for w, v in speeds.items()}
        if "train" not in args.skip:
            dataset = gta5_training_set(root, args.train_frames)
            mx.random.seed(0)
            net = MLSLNet(19, width=0.125, with_classifier=False)
            init_params(net, ctx=mx.cpu())
            net.hybridize()
            trainer = build_trainer(net, [mx.cpu()], lr=1e-4)
            bench_train_steps(net, trainer, dataset, 0, args.batch_size, epoch=0)  # warm-up
            steps = {0: [], 2: []}
            for run in range(args.runs):
                for workers in steps:
                    steps[workers].append(bench_train_steps(net, trainer, dataset, workers, args.batch_size,
                                                            epoch=1 + run))
            for workers, values in steps.items():
                print(f"training step, width 1/8, 504x504, batch {args.batch_size}, "
                      f"{'prefetched by 2 workers' if workers else 'read in the training process'}: "
                      f"median {median(values):.3f} s (runs {', '.join(f'{v:.3f}' for v in values)})",
                      flush=True)
            result["train_step_s"] = {"no_prefetch": round(median(steps[0]), 4),
                                      "prefetch_2_workers": round(median(steps[2]), 4)}
    result["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()

"""Training throughput (images/s) of a reduced-width MLSLNet on CPU, 1 and 2 CPU contexts.

Each setting trains a hybridized MLSLNet on random 504 x 504 crops with the real engine
(``train_epoch``: forward, Eq. 1/2 (+ Eq. 5) losses, backward, SGD step) and reports the median
images/s over several timed runs, after one untimed warm-up run. The global batch is the same
for every context count, so the figures compare splitting one batch over devices.

    OMP_NUM_THREADS=1 .venv/bin/python tools/bench_train.py --width 0.125 --runs 3

The last line printed is one JSON object with all figures.
"""
import argparse
import json
import os
import statistics
import time

import mxnet as mx
import numpy as np

from mlsl_gluon.config import LossSettings
from mlsl_gluon.model import MLSLNet, init_params
from mlsl_gluon.training import build_trainer, train_epoch


def synthetic_batches(num, batch_size, size, num_classes, seed=0):
    """``num`` random (images, label8, weak) batches in the engine's format."""
    rng = np.random.RandomState(seed)
    stride_size = -(-size // 8)
    return [(rng.randn(batch_size, 3, size, size).astype(np.float32),
             rng.randint(0, num_classes, size=(batch_size, stride_size, stride_size)).astype(np.float32),
             rng.randint(0, 2, size=(batch_size, num_classes)).astype(np.float32))
            for _ in range(num)]


def bench(num_ctx, *, width, size, batch_size, iters, runs, num_classes, use_cls):
    """Images/s of each timed run for ``num_ctx`` CPU contexts."""
    ctx = [mx.cpu(i) for i in range(num_ctx)]
    mx.random.seed(0)
    net = MLSLNet(num_classes=num_classes, width=width, with_classifier=use_cls)
    init_params(net, ctx=ctx)
    net.hybridize(static_alloc=True, static_shape=True)
    trainer = build_trainer(net, ctx, lr=1e-4)
    batches = synthetic_batches(iters, batch_size, size, num_classes)
    loss = LossSettings(use_cls=use_cls)
    train_epoch(net, trainer, batches[:1], ctx, loss=loss, progress=False)  # warm-up, graph build
    speeds = []
    for run in range(runs):
        start = time.perf_counter()
        train_epoch(net, trainer, batches, ctx, loss=loss, progress=False, log_every=0)
        mx.nd.waitall()
        elapsed = time.perf_counter() - start
        speeds.append(iters * batch_size / elapsed)
        print(f"{num_ctx} ctx, run {run + 1}/{runs}: {speeds[-1]:.3f} images/s ({elapsed:.1f} s)", flush=True)
    return speeds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=float, default=0.125, help="MLSLNet channel multiplier")
    parser.add_argument("--size", type=int, default=504, help="square crop size (paper: 504)")
    parser.add_argument("--batch-size", type=int, default=2, help="global batch (paper SISC: 2)")
    parser.add_argument("--iters", type=int, default=3, help="iterations per timed run")
    parser.add_argument("--runs", type=int, default=3, help="timed runs; the median is reported")
    parser.add_argument("--num-classes", type=int, default=19)
    parser.add_argument("--use-cls", action="store_true", help="train the PWL branch too (Eq. 7)")
    parser.add_argument("--contexts", default="1,2", help="CPU context counts to compare")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.contexts.split(",")]
    if any(args.batch_size < c for c in counts):
        parser.error("--batch-size must be at least the largest context count")

    result = {"width": args.width, "size": args.size, "global_batch": args.batch_size,
              "iters_per_run": args.iters, "runs": args.runs, "use_cls": args.use_cls,
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "cpu_count": os.cpu_count(),
              "load_average_before": [round(v, 2) for v in os.getloadavg()], "images_per_s": {}}
    for num_ctx in counts:
        speeds = bench(num_ctx, width=args.width, size=args.size, batch_size=args.batch_size,
                       iters=args.iters, runs=args.runs, num_classes=args.num_classes,
                       use_cls=args.use_cls)
        median = statistics.median(speeds)
        print(f"{num_ctx} CPU context(s): median {median:.3f} images/s over {args.runs} runs", flush=True)
        result["images_per_s"][f"{num_ctx}_ctx"] = {"median": round(median, 4),
                                                    "runs": [round(s, 4) for s in speeds]}
    # Other processes on a shared machine change the figures; the load average says how much.
    result["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()

"""Benchmark of the pseudo-label step on CPU: cache size, cache-vs-full-precision label agreement
and threshold error (without and with the spatial prior), peak memory of threshold computation +
selection, and the SISC overhead over the bare forwards.

Usage: OMP_NUM_THREADS=1 python tools/bench_pseudo_labels.py [--width 0.0625] [--K 4] [--runs 3]
       [--network trained|random] [--train-iterations 150]

Images are 1024x2048 with 19 classes: two generated target-domain scenes (mlsl_gluon.demo) and
the Cityscapes sample of ../shared/data/real_samples when present. The headline network
(``--network``, default ``trained``) is a reduced-width MLSLNet trained for about a minute on
generated source scenes (GTA5 format): what a source model's probabilities look like, peaked
and spatially coherent, unlike a random-weight network's near-uniform, noisy ones. The cache
figures of the other network are printed too, and reported under ``<other>_network`` in the
JSON. The spatial prior is computed (``spatial_prior``, Laplace alpha 1) from the labels of the
generated source scenes the network was trained on. Nothing is tuned on labels of the test
images (they are never read): this is a storage benchmark. Figures are printed; the last line is
one JSON object.
"""
import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REAL_SAMPLES = HERE.parent.parent / "shared" / "data" / "real_samples"
HEIGHT, WIDTH, CLASSES = 1024, 2048, 19


def peak_rss_mb():
    """Peak RSS of this process in MB: VmHWM, which starts afresh at exec (ru_maxrss on Linux
    carries over the high-water mark of the forked parent)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def rss_worker(num_images, seed=0):
    """Child process: thresholds + selection over ``num_images`` synthetic cached maps; peak RSS MB.

    The maps are what the round's pass 2 reads from the cache (argmax class and first-class code
    on the prior's 12-bit grid per pixel at 1024x2048), generated on the fly; pass 1 accumulates
    the coarse threshold histograms, the refinement sweep counts inside the rank bins and pass 2
    selects, exactly as combine_pseudo_label_round does, minus the HDF5 reads.
    """
    from mlsl_gluon.pseudo_labels.cache import PRIOR_FIRST_SHIFT
    from mlsl_gluon.pseudo_labels.grid import coarsen_codes, dequantise_probability, num_probability_codes
    from mlsl_gluon.pseudo_labels.selection import select_from_top_classes
    from mlsl_gluon.pseudo_labels.thresholds import CodeRefinement, ThresholdAccumulator

    fine = PRIOR_FIRST_SHIFT

    def cached_map(i):
        rng = np.random.default_rng([seed, i])
        blocks = rng.integers(0, CLASSES, size=(HEIGHT // 64, WIDTH // 64), dtype=np.uint8)
        top_class = np.repeat(np.repeat(blocks, 64, axis=0), 64, axis=1)[None]
        first_code = rng.integers(num_probability_codes(fine) // 2, num_probability_codes(fine),
                                  size=(HEIGHT, WIDTH), dtype=np.uint32)
        return top_class, first_code

    acc = ThresholdAccumulator(CLASSES)
    for i in range(num_images):
        top_class, first_code = cached_map(i)
        acc.update_codes(top_class[0], coarsen_codes(first_code, fine, 0))
    refinement = CodeRefinement(acc, 0.3, fine)
    for i in range(num_images):
        top_class, first_code = cached_map(i)
        refinement.update_codes(top_class[0], first_code)
    k = refinement.thresholds()
    selected = 0
    for i in range(num_images):
        top_class, first_code = cached_map(i)
        label = select_from_top_classes(top_class, dequantise_probability(first_code, fine)[None], k)
        selected += int((label != 255).sum())
    peak_mb = peak_rss_mb()
    print(json.dumps({"images": num_images, "peak_rss_mb": peak_mb, "selected": selected}))


def benchmark_images():
    """The 1024x2048 images: generated target-domain scenes and the Cityscapes sample if present."""
    import cv2

    from mlsl_gluon.demo.synthetic import make_frame

    # Stream 'target_train' from index 1000: frames the demo's own data sets never contain.
    images = [make_frame(0, "target_train", 1000 + i, "target", (HEIGHT, WIDTH))[0] for i in range(2)]
    names = [f"generated/target_{i}" for i in range(2)]
    city = REAL_SAMPLES / "cityscapes" / "leftImg8bit" / "train" / "aachen" / \
        "aachen_000000_000019_leftImg8bit.png"
    if city.is_file():
        image = np.ascontiguousarray(cv2.imread(str(city))[:, :, ::-1])
        images.append(cv2.resize(image, (WIDTH, HEIGHT)) if image.shape[:2] != (HEIGHT, WIDTH) else image)
        names.append("cityscapes/aachen_000000_000019")
    return images, names


def trained_network(width, iterations, seed, ctx):
    """A reduced-width MLSLNet trained briefly on generated source scenes (GTA5 format).

    Source-only SGD as the demo does it from a random trunk (batch statistics, lr 0.02):
    ``iterations`` steps of 4 random 256x256 crops of 30 512x1024 frames written by
    ``generate_demo_data`` and read back by the GTA5 reader. Returns ``(net, last epoch loss,
    spatial prior of those source labels)``.
    """
    import mxnet as mx

    from mlsl_gluon.data.gta5 import GTA5
    from mlsl_gluon.data.transforms import normalize, subsample_label
    from mlsl_gluon.demo.synthetic import generate_demo_data
    from mlsl_gluon.model import MLSLNet, init_params
    from mlsl_gluon.pseudo_labels import spatial_prior
    from mlsl_gluon.training.engine import build_trainer, train_epoch

    with tempfile.TemporaryDirectory() as tmp:
        roots = generate_demo_data(tmp, seed=seed, n_source=30, n_target_train=1, n_target_val=1,
                                   size=(512, 1024), source_format="gta5")
        source = GTA5(roots["gta5"], frame_size=None)
        frames = [source[i][:2] for i in range(len(source))]
    prior = spatial_prior([label for _, label in frames], CLASSES)
    mx.random.seed(seed)
    net = MLSLNet(num_classes=CLASSES, width=width, with_classifier=False, freeze_bn=False)
    init_params(net, ctx=ctx)
    net.hybridize(static_alloc=True)
    trainer = build_trainer(net, [ctx], lr=0.02, kvstore="local")
    rng = np.random.default_rng(seed)

    def batch():
        images, labels = [], []
        for _ in range(4):
            image, label = frames[rng.integers(len(frames))]
            y, x = rng.integers(0, image.shape[0] - 255), rng.integers(0, image.shape[1] - 255)
            images.append(normalize(image[y:y + 256, x:x + 256]))
            labels.append(subsample_label(label[y:y + 256, x:x + 256]).astype(np.float32))
        return np.stack(images), np.stack(labels), None

    class Batches:  # drawn on the fly: 150 batches of float32 crops would hold ~0.5 GB
        def __len__(self):
            return iterations

        def __iter__(self):
            return (batch() for _ in range(iterations))

    losses = train_epoch(net, trainer, Batches(), [ctx], progress=False, log_every=0)
    return net, losses["seg"], prior


class InMemoryTarget:
    def __init__(self, images, names):
        self.images, self.names, self.num_classes = images, names, CLASSES

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], None, self.names[i]


def exact_thresholds(score_maps, portion):
    """SPEC section 3 by sorting every pixel's score (k = 1 for an empty class, rank 0 or score 0)."""
    pred = np.concatenate([p.argmax(0).ravel() for p in score_maps])
    conf = np.concatenate([p.max(0).ravel() for p in score_maps])
    k = np.ones(CLASSES)
    for c in range(CLASSES):
        values = np.sort(conf[pred == c])[::-1]
        rank = int(np.floor(len(values) * portion))
        if rank and values[rank - 1] > 0:
            k[c] = values[rank - 1]
    return k


def round_thresholds(entries, portion, coarse_shift=0):
    """What combine_pseudo_label_round computes from cache entries: coarse histograms, then the
    refinement on the entries' first-class grid when it is finer."""
    from mlsl_gluon.pseudo_labels.grid import coarsen_codes
    from mlsl_gluon.pseudo_labels.thresholds import CodeRefinement, ThresholdAccumulator

    coarse_shift = max(coarse_shift, entries[0].first_shift)
    acc = ThresholdAccumulator(CLASSES, coarse_shift)
    for e in entries:
        acc.update_codes(e.top_class[0], coarsen_codes(e.first_code, e.first_shift, coarse_shift),
                         valid=e.top_class[0] != 255)
    if entries[0].first_shift == coarse_shift:
        return acc.thresholds(portion), acc
    refinement = CodeRefinement(acc, portion, entries[0].first_shift)
    for e in entries:
        refinement.update_codes(e.top_class[0], e.first_code, valid=e.top_class[0] != 255)
    return refinement.thresholds(), acc


def prior_figures(probs, names, prior, portion=0.5):
    """With the spatial prior: the round's cache path (top classes by prior-weighted score, the
    first on the 12-bit grid, later ones as ratios, those below 1/LATER_CLASS_SPREAD of the first
    dropped, thresholds from the cached first-class codes) against the exact definition on the
    float32 scores.

    Returns (largest entry in bytes, max relative threshold error over classes with an exact
    threshold >= 1e-6, agreement with exact selection, agreement with full-precision selection
    under the cache's thresholds)."""
    from mlsl_gluon.pseudo_labels import (
        ProbabilityCache,
        apply_spatial_prior,
        encode_top_classes,
        select_from_top_classes,
        select_pseudo_labels,
    )
    from mlsl_gluon.pseudo_labels.cache import LATER_CLASS_SPREAD, PRIOR_FIRST_SHIFT, spread_is_lossless

    scores = [apply_spatial_prior(p, prior) for p, _ in probs]
    exact = exact_thresholds(scores, portion)
    with tempfile.TemporaryDirectory() as tmp:
        cache = ProbabilityCache(os.path.join(tmp, "c.h5"), {"bench": 1})
        for name, score, (_, covered) in zip(names, scores, probs):
            cache.write(name, encode_top_classes(score, valid=covered, first_shift=PRIOR_FIRST_SHIFT,
                                                 spread=LATER_CLASS_SPREAD))
        sizes = [int(cache.entry_nbytes(n)) for n in names]
        entries = [cache.read(n)[0] for n in names]
        cache.close()
    k, acc = round_thresholds(entries, portion)
    ranked = exact >= 1e-6
    rel_error = float(np.max(np.abs(k[ranked] - exact[ranked]) / exact[ranked]))
    cached = [select_from_top_classes(e.top_class, e.scores(), k) for e in entries]
    vs_exact = float(np.mean([np.mean(a == select_pseudo_labels(s, exact)) for a, s in zip(cached, scores)]))
    vs_same = float(np.mean([np.mean(a == select_pseudo_labels(s, k)) for a, s in zip(cached, scores)]))
    print(f"  with the spatial prior, portion {portion}: cache bytes per image {sizes}; max relative "
          f"threshold error {rel_error:.2e} (classes with k >= 1e-6: {int(ranked.sum())}); labels from "
          f"the cache agree with exact selection on {vs_exact:.6f} of pixels, with full-precision "
          f"selection under the same thresholds on {vs_same:.6f}; thresholds {k.min():.2e}..{k.max():.2e}, "
          f"spread rule lossless: {spread_is_lossless(k, LATER_CLASS_SPREAD, acc.class_counts())}")
    return max(sizes), rel_error, vs_exact, vs_same


def cache_figures(probs, names, variants):
    """Per variant: (largest entry in bytes, lowest agreement over portions); figures printed."""
    from mlsl_gluon.pseudo_labels import (
        ProbabilityCache,
        encode_top_classes,
        select_from_top_classes,
        select_pseudo_labels,
    )

    references = {}
    for portion in (0.15, 0.3, 0.5):
        exact = exact_thresholds([p for p, _ in probs], portion)
        references[portion] = exact, [select_pseudo_labels(p, exact) for p, _ in probs]
    figures = {}
    for title, settings in variants.items():
        with tempfile.TemporaryDirectory() as tmp:
            cache = ProbabilityCache(os.path.join(tmp, "c.h5"), {"bench": 1})
            for name, (prob, covered) in zip(names, probs):
                cache.write(name, encode_top_classes(prob, valid=covered, **settings))
            sizes = [int(cache.entry_nbytes(n)) for n in names]
            entries = [cache.read(n)[0] for n in names]
            cache.close()
        print(f"  {title}: cache bytes per image {sizes} (largest {max(sizes) / 2**20:.2f} MiB; float32 "
              f"would be {CLASSES * HEIGHT * WIDTH * 4 / 2**20:.0f} MiB)")
        agreements = []
        for portion, (exact, reference) in references.items():
            k, _ = round_thresholds(entries, portion)
            cached = [select_from_top_classes(e.top_class, e.scores(), k) for e in entries]
            agree = float(np.mean([np.mean(a == b) for a, b in zip(cached, reference)]))
            agreements.append(agree)
            print(f"    portion {portion}: labels from the cache agree with full-precision labels on "
                  f"{agree:.6f} of pixels ({np.mean([np.mean(r != 255) for r in reference]):.3f} "
                  f"labelled; max |k_cache - k_exact| = {np.abs(k - exact).max():.1e})")
        figures[title] = (max(sizes), min(agreements))
    return figures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=1 / 16)
    parser.add_argument("--K", type=int, default=4)
    parser.add_argument("--patch-size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--train-iterations", type=int, default=150,
                        help="source-only SGD steps (4 crops each) of the trained network")
    parser.add_argument("--network", choices=("trained", "random"), default="trained",
                        help="network of the headline figures; the other one's cache figures are "
                             "printed too")
    parser.add_argument("--rss-worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_worker is not None:
        rss_worker(args.rss_worker)
        return

    import mxnet as mx

    from mlsl_gluon.config import Config, pseudo_label_settings
    from mlsl_gluon.data.transforms import normalize
    from mlsl_gluon.model import MLSLNet, init_params
    from mlsl_gluon.pseudo_labels import (
        dequantise_probability,
        patch_seed,
        predict_batch,
        quantise_probability,
        run_pseudo_label_round,
        sample_patch_corners,
        sisc_inference,
    )
    from mlsl_gluon.pseudo_labels.cache import PLAIN_FIRST_SHIFT, PLAIN_RATIO_STEPS
    from mlsl_gluon.pseudo_labels.round import RoundFolder

    ctx = mx.cpu()
    images, names = benchmark_images()
    # The config's step-1 settings with the benchmark's SISC sizes, at native resolution.
    sisc = dataclasses.replace(pseudo_label_settings(Config()), method="sisc", K=args.K,
                               patch_size=args.patch_size, flip=True, batch_size=args.batch_size,
                               longer_side=None, spatial_prior=False, weak_labels=False, seed=0)
    print(f"images: {len(images)} x {HEIGHT}x{WIDTH} ({', '.join(names)}); {CLASSES} classes; SISC "
          f"K={args.K}, patch {args.patch_size}, flip, batch {args.batch_size}")
    start = time.time()
    trained, loss, prior = trained_network(args.width, args.train_iterations, 0, ctx)
    print(f"TRAINED network: MLSLNet width={args.width:g}, {args.train_iterations} source-only steps of "
          f"4 256x256 crops on generated GTA5-format scenes, last seg loss {loss:.3f} "
          f"({time.time() - start:.0f} s)")
    mx.random.seed(0)
    random_net = MLSLNet(num_classes=CLASSES, width=args.width, with_classifier=False)
    init_params(random_net, ctx=ctx)
    random_net.hybridize(static_alloc=True)
    networks = {"trained": trained, "random": random_net}

    # 1. Cache size and agreement with full-precision labels (exact sort-based thresholds on the
    # float32 SISC maps): the round's default cache settings and two variants.
    floor = float(dequantise_probability(quantise_probability(1.0 / CLASSES)))
    plain = dict(first_shift=PLAIN_FIRST_SHIFT, floor=floor, spread=1.0 / floor,
                 ratio_steps=PLAIN_RATIO_STEPS)  # the round's settings without a prior
    variants = {"default without a prior (top 2 classes, 11-bit first-class grid)": dict(plain, top=2),
                "top 3 classes": dict(plain, top=3),
                "compact (top 1 class, grid shift 2)": dict(top=1, first_shift=2, spread=2.0)}
    headline = next(iter(variants))
    figures = {}
    for kind in (args.network, "random" if args.network == "trained" else "trained"):
        net = networks[kind]
        predict_batch(net, normalize(images[0][:64, :64])[None], ctx)  # build the cached graph
        probs = [sisc_inference(net, image, ctx, sisc, patch_seed(0, name))
                 for name, image in zip(names, images)]
        top1 = np.mean([np.mean(p.max(0)) for p, _ in probs])
        print(f"{kind.upper()} network (mean top-1 probability {top1:.3f}):")
        figures[kind] = cache_figures(probs, names, variants)[headline] + prior_figures(probs, names, prior)
        del probs

    # 2. Peak RSS of thresholds + selection over 100 and 500 images, each in its own process.
    rss = {}
    for n in (100, 500):
        start = time.time()
        out = subprocess.run([sys.executable, __file__, "--rss-worker", str(n)], check=True,
                             capture_output=True, text=True).stdout.strip().splitlines()[-1]
        rss[str(n)] = round(json.loads(out)["peak_rss_mb"], 1)
        print(f"thresholds + selection over {n} cached 1024x2048 maps: peak RSS {rss[str(n)]} MB "
              f"({time.time() - start:.0f} s)")

    # 3. Whole SISC pass (pass 1 of the round: inference, aggregation, encoding, cache writes)
    # against the same network calls alone, on the first image, with the headline network.
    net = networks[args.network]
    image, name = images[0], names[0]
    x = normalize(image)
    corners, (ph, pw) = sample_patch_corners(HEIGHT, WIDTH, args.patch_size, args.K, patch_seed(0, name))
    batches = [x[None]] + [np.stack([x[:, y:y + ph, c:c + pw] for y, c in corners[s:s + args.batch_size]])
                           for s in range(0, args.K, args.batch_size)]
    # CPU time of the process (all threads) is printed too: on a machine shared with other jobs
    # it is much less noisy than wall time.
    whole, forwards, whole_cpu, forwards_cpu = [], [], [], []
    for _ in range(args.runs):
        start, start_cpu = time.time(), time.process_time()
        for batch in batches:
            predict_batch(net, batch, ctx, flip=True)
        forwards.append(time.time() - start)
        forwards_cpu.append(time.process_time() - start_cpu)
        with tempfile.TemporaryDirectory() as tmp:
            start, start_cpu = time.time(), time.process_time()
            # Shard 0 of 2 of a one-image set: pass 1 only (inference + cache), no selection.
            run_pseudo_label_round(net, InMemoryTarget([image], [name]), RoundFolder(tmp, 0, (0, 2)),
                                   portion=0.3, ctx=ctx, settings=sisc)
            whole.append(time.time() - start)
            whole_cpu.append(time.process_time() - start_cpu)
    ratio = statistics.median(whole) / statistics.median(forwards)
    cpu_ratio = statistics.median(whole_cpu) / statistics.median(forwards_cpu)
    print(f"SISC pass per image ({args.network} network): {[round(t, 2) for t in whole]} s; forwards "
          f"alone: {[round(t, 2) for t in forwards]} s; median wall-time ratio {ratio:.3f}")
    print(f"CPU time: SISC pass {[round(t, 2) for t in whole_cpu]} s; forwards alone "
          f"{[round(t, 2) for t in forwards_cpu]} s; median CPU-time ratio {cpu_ratio:.3f}")

    other = "random" if args.network == "trained" else "trained"
    result = {
        "network": args.network,
        "cache_bytes_per_image": int(figures[args.network][0]),
        "label_agreement": round(figures[args.network][1], 6),
        "cache_bytes_per_image_prior": int(figures[args.network][2]),
        "threshold_rel_error_prior": float(f"{figures[args.network][3]:.3g}"),
        "label_agreement_prior": round(figures[args.network][4], 6),
        "label_agreement_prior_same_thresholds": round(figures[args.network][5], 6),
        "selection_peak_rss_mb": rss,
        "sisc_overhead_ratio": round(ratio, 3),
        f"{other}_network": {"cache_bytes_per_image": int(figures[other][0]),
                             "label_agreement": round(figures[other][1], 6),
                             "cache_bytes_per_image_prior": int(figures[other][2]),
                             "threshold_rel_error_prior": float(f"{figures[other][3]:.3g}"),
                             "label_agreement_prior": round(figures[other][4], 6)},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

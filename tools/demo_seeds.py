"""Run the demo for several seeds and report every figure's mean and standard deviation.

    python tools/demo_seeds.py --seeds 0-4 --out runs/demo-seeds [--jobs 2] [--preset full]

Each seed is one ``mlsl-gluon demo --seed N --out OUT/seed-N`` process with one OpenMP thread
(the demo's figures are reproducible only with one thread); ``--jobs`` of them run at once. A
seed whose ``results.json`` exists is not run again. Writes ``OUT/seeds.json`` (per seed and
aggregated figures) and ``OUT/seeds.md`` (markdown tables: every seed, no selection, then the
mean and the sample standard deviation over the seeds, and the goals of issue 15 checked on
those means).
"""
import argparse
import json
import logging
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

logger = logging.getLogger("demo_seeds")

METHODS = (("source_only", "Source only"), ("cbst", "CBST (SI)"), ("sisc", "SISC"), ("sisc_pwl", "SISC+PWL"))
PSEUDO = (("cbst", "CBST (SI)"), ("si_same_network", "SI on SISC's networks"), ("sisc", "SISC"),
          ("sisc_pwl", "SISC+PWL"))
BRANCH = (("weak_label_accuracy", "PWL accuracy vs true presence"),
          ("branch_accuracy", "branch accuracy (sigmoid > 0.5)"),
          ("classification_loss", "cls loss, training"),
          ("target_classification_loss", "cls loss, target vs PWL"))


def parse_seeds(text):
    """``'0-4'`` -> [0, 1, 2, 3, 4]; ``'0,2,5'`` -> [0, 2, 5]; ranges and lists combine."""
    seeds = []
    for part in text.split(","):
        low, sep, high = part.strip().partition("-")
        try:
            seeds += list(range(int(low), int(high) + 1)) if sep else [int(low)]
        except ValueError:
            raise SystemExit(f"--seeds {text!r}: expected numbers and ranges such as 0-4 or 0,2,5") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise SystemExit(f"--seeds {text!r}: give each seed once")
    return seeds


def run_seed(seed, out, preset):
    """One demo process; returns (seed, wall seconds or None when it had already run)."""
    folder = out / f"seed-{seed}"
    if (folder / "results.json").is_file():
        logger.info("seed %d: %s exists, not run again", seed, folder / "results.json")
        return seed, None
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, "-c", "from mlsl_gluon.cli import main; main()", "demo", "--out", str(folder),
               "--seed", str(seed), "--preset", preset, "--no-progress"]
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(out / f"seed-{seed}.log", "w") as log:
        code = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    wall = round(time.perf_counter() - started, 1)
    if code != 0:
        raise SystemExit(f"seed {seed} failed (exit {code}); see {out / f'seed-{seed}.log'}")
    logger.info("seed %d done in %.0f s", seed, wall)
    return seed, wall


def mean_std(values):
    """(mean, sample standard deviation) of a list; std None for one value."""
    values = np.asarray(values, np.float64)
    return float(values.mean()), (float(values.std(ddof=1)) if values.size > 1 else None)


def _pm(values, scale=1.0, digits=1):
    mean, std = mean_std([scale * v for v in values])
    return f"{mean:.{digits}f}" + ("" if std is None else f" ± {std:.{digits}f}")


def aggregate(per_seed):
    """Mean and standard deviation of every figure over the seeds (the JSON part of the report)."""
    runs = list(per_seed.values())
    summary = {"miou": {k: mean_std([r[k] for r in runs]) for k, _ in METHODS}}
    summary["gain_over_source_only"] = {k: mean_std([r[k] - r["source_only"] for r in runs])
                                        for k, _ in METHODS[1:]}
    for name in ("pseudo_label_precision", "pseudo_label_coverage"):
        summary[name] = {k: [mean_std(v) for v in zip(*[r[name][k] for r in runs])]
                         for k, _ in PSEUDO if k in runs[0][name]}
    for name, _ in BRANCH:
        summary[name] = [mean_std(v) for v in zip(*[r[name]["sisc_pwl"] for r in runs])]
    summary["goals"] = goals(runs)
    return summary


def goals(runs):
    """The demo's goals (issue 15) evaluated on the seeds' figures."""
    mean = {k: float(np.mean([r[k] for r in runs])) for k, _ in METHODS}
    si = np.mean([r["pseudo_label_precision"]["cbst"] for r in runs], axis=0)
    sisc = np.mean([r["pseudo_label_precision"]["sisc"] for r in runs], axis=0)
    same = np.mean([r["pseudo_label_precision"]["si_same_network"] for r in runs], axis=0)
    last_loss = float(np.mean([r["classification_loss"]["sisc_pwl"][-1] for r in runs]))
    gains = [r["sisc_pwl"] - r["source_only"] for r in runs]
    return {
        "sisc_precision_above_cbst_rounds": f"{int((sisc > si).sum())} of {si.size}",
        "sisc_precision_above_si_same_network_rounds": f"{int((sisc > same).sum())} of {same.size}",
        "classification_loss_last_round": last_loss,
        "classification_loss_below_ln2": bool(last_loss < np.log(2)),
        "ranking_pwl_ge_sisc_ge_cbst_gt_source": bool(mean["sisc_pwl"] >= mean["sisc"] >= mean["cbst"]
                                                      > mean["source_only"]),
        "min_gain_pwl_over_source_only": float(min(gains)),
        "gain_ge_5_every_seed": bool(min(gains) >= 5.0),
    }


def markdown(per_seed, walls, summary):
    """The report tables (markdown)."""
    seeds = sorted(per_seed)
    runs = [per_seed[s] for s in seeds]
    lines = ["Target val mIoU (%), every seed:", "",
             "| seed | " + " | ".join(label for _, label in METHODS)
             + " | SISC+PWL - source only | wall (s) |",
             "|---" * (len(METHODS) + 3) + "|"]
    for seed, r in zip(seeds, runs):
        wall = walls.get(seed) or r.get("elapsed_s")
        lines.append(f"| {seed} | " + " | ".join(f"{r[k]:.1f}" for k, _ in METHODS)
                     + f" | {r['sisc_pwl'] - r['source_only']:+.1f} | {wall:.0f} |")
    lines.append("| mean ± std | " + " | ".join(_pm([r[k] for r in runs]) for k, _ in METHODS)
                 + " | " + _pm([r["sisc_pwl"] - r["source_only"] for r in runs]) + " | |")
    rounds = len(runs[0]["pseudo_label_precision"]["cbst"])
    header = "| | " + " | ".join(f"round {i}" for i in range(rounds)) + " |"
    rule = "|---" * (rounds + 1) + "|"
    for name, title in (("pseudo_label_precision", "Pseudo-label precision (%, mean ± std over seeds)"),
                        ("pseudo_label_coverage", "Pseudo-label coverage (%, mean ± std over seeds)")):
        lines += ["", title + ":", "", header, rule]
        for key, label in PSEUDO:
            if key in runs[0][name]:
                cells = [_pm(v, 100.0) for v in zip(*[r[name][key] for r in runs])]
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "SISC+PWL classification branch on the target train split (mean ± std over seeds):", "",
              header, rule]
    for key, label in BRANCH:
        scale, digits = (100.0, 1) if "accuracy" in key else (1.0, 3)
        cells = [_pm(v, scale, digits) for v in zip(*[r[key]["sisc_pwl"] for r in runs])]
        lines.append(f"| {label}{' (%)' if scale == 100.0 else ''} | " + " | ".join(cells) + " |")
    lines += ["", "Goals (issue 15), on these seeds:", ""]
    lines += [f"- {key}: {value}" for key, value in summary["goals"].items()]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0-4", help="seeds, e.g. 0-4 or 0,2,5 (default 0-4)")
    parser.add_argument("--out", default="runs/demo-seeds", help="folder of the seeds' demos and the report")
    parser.add_argument("--jobs", type=int, default=2, help="demos run at once, one thread each (default 2)")
    parser.add_argument("--preset", default="full", choices=("full", "tiny"), help="demo preset")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = parse_seeds(args.seeds)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        walls = dict(pool.map(lambda s: run_seed(s, out, args.preset), seeds))
    per_seed = {s: json.loads((out / f"seed-{s}" / "results.json").read_text()) for s in seeds}
    summary = aggregate(per_seed)
    (out / "seeds.json").write_text(json.dumps({"seeds": seeds, "wall_s": walls, "summary": summary,
                                                "per_seed": per_seed}, indent=1))
    report = markdown(per_seed, walls, summary)
    (out / "seeds.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The demo run: the whole method on the generated street-scene shift, on CPU, in minutes.

Steps, every one the package's real code path: generate the data in the GTA5 / Cityscapes
formats, train the source model (the ``source-only`` method from a seeded random trunk, since no
ImageNet weights can be downloaded), then adapt it with CBST (SI pseudo-labels), SISC and
SISC+PWL through the same round loop as a real run, evaluate each on the target val split,
measure the mechanisms against the target-train truth (:mod:`.mechanisms`) and write the
comparison table, ``results.json`` and pictures. Sizes: :mod:`.presets` and ``docs/DEMO.md``.

Folder of a demo::

    OUT/data/     the data root every run reads (GTA5/, Cityscapes/ with val labels only)
    OUT/truth/    target-train ground truth, read by the measurements only
    OUT/source_only/, cbst/, sisc/, sisc_pwl/   run folders; si_same_network/ (measurement)
    OUT/results.json, table.txt, pictures/
"""
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import mxnet as mx

from ..data.classes import CITYSCAPES_19_NAMES
from ..evaluation.report import read_evaluation
from ..model import MLSLNet, init_params
from ..model.weights import ademxapp_param_map
from ..training.experiment import run_experiment
from .mechanisms import measure_mechanisms
from .pictures import write_pictures
from .presets import FULL, METHODS, demo_config
from .synthetic import generate_demo_data
from .table import format_demo_table

logger = logging.getLogger(__name__)


def write_random_trunk(path, width, seed):
    """Write a seeded random-init ResNet-38 trunk in the ademxapp file format.

    It stands in for the ImageNet weights a real run starts its source training from (none can
    be downloaded); the training code reads it as it would read those.

    Parameters
    ----------
    path : str or Path
    width : float
        Channel multiplier of the trunk.
    seed : int

    Returns
    -------
    str or Path
        ``path``.
    """
    net = MLSLNet(19, width=width, with_classifier=False)
    mx.random.seed(seed)
    init_params(net, ctx=mx.cpu())
    arrays = {key: param.data() for key, param in ademxapp_param_map(net.trunk).items()}
    mx.nd.save(str(path), arrays)
    return path


def _check_out(out, seed, settings):
    """Refuse to mix two demos in one folder: a re-run with the same seed resumes."""
    record = {"seed": seed, "settings": asdict(settings)}
    marker = out / "demo.json"
    if marker.is_file():
        previous = json.loads(marker.read_text())
        if previous != json.loads(json.dumps(record)):
            raise ValueError(f"{out} holds a demo with seed {previous.get('seed')} and other settings; "
                             f"choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(record, indent=1))


def run_demo(out, *, seed=0, settings=FULL, ctx=None, progress=True):
    """Run the demo into ``out`` and return the results written to ``out/results.json``.

    Parameters
    ----------
    out : str or Path
        Demo folder: ``data/``, one run folder per method, ``results.json``, ``table.txt``,
        ``pictures/``. A re-run with the same seed and settings resumes (finished runs are kept).
    seed : int
        Seeds the data and every run.
    settings : DemoSettings
        ``FULL`` (default) or ``TINY`` (a smoke run).
    ctx : list of mx.Context, optional
        Default CPU.
    progress : bool
        Progress bars.

    Returns
    -------
    results : dict
        ``{'source_only', 'cbst', 'sisc', 'sisc_pwl'}``: target val mIoU in percent; ``per_round``:
        per method, the mIoU after each round; ``per_class``; the mechanism measurements of
        :func:`mlsl_gluon.demo.mechanisms.measure_mechanisms` (shares in [0, 1]); ``seed``,
        ``settings``, ``step_seconds``, ``elapsed_s``.
    table : str
        The text of ``table.txt``.
    """
    started = time.perf_counter()
    out = Path(out)
    _check_out(out, seed, settings)
    ctx = ctx or [mx.cpu()]
    data_root = out / "data"
    generate_demo_data(data_root, seed=seed, n_source=settings.n_source,
                       n_target_train=settings.n_target_train, n_target_val=settings.n_target_val,
                       size=settings.size, truth_root=out / "truth", progress=progress)
    init = write_random_trunk(out / "random_trunk.params", settings.width, seed)
    summaries, timings = {}, {}
    for method, key in METHODS:
        step_started = time.perf_counter()
        weights = init if method == "source-only" else out / "source_only" / "final.params"
        logger.info("demo: %s", method)
        config = demo_config(settings, method, seed)
        summaries[key] = run_experiment(config, data_root, weights, out / key, ctx, resume=True,
                                        progress=progress)
        timings[key] = round(time.perf_counter() - step_started, 1)

    results = {key: 100.0 * summaries[key]["miou"] for _, key in METHODS}
    rounds = range(settings.num_rounds)
    results["per_round"] = {key: [100.0 * summaries[key]["round_miou"][str(r)] for r in rounds]
                            for _, key in METHODS[1:]}
    results["per_class"] = {key: [None if v is None else 100.0 * v for v in read_evaluation(out / key)["iou"]]
                            for _, key in METHODS}
    measure_started = time.perf_counter()
    results.update(measure_mechanisms(out, lambda method: demo_config(settings, method, seed),
                                      settings.num_rounds, ctx, progress))
    timings["measurements"] = round(time.perf_counter() - measure_started, 1)
    results.update(units="percent mIoU on the target val split; pseudo-label and weak-label figures "
                         "are shares in [0, 1]", class_names=list(CITYSCAPES_19_NAMES),
                   seed=seed, settings=asdict(settings), step_seconds=timings)
    table = format_demo_table(results)
    (out / "table.txt").write_text(table)
    results["pictures"] = {k: str(p) for k, p in write_pictures(out, results, settings, seed, ctx).items()}
    results["elapsed_s"] = round(time.perf_counter() - started, 1)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    logger.info("demo finished in %.0f s", results["elapsed_s"])
    return results, table

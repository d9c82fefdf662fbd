"""The network of a run and its end: building and loading MLSLNet, evaluating on the target val
set, and the final weights + summary. Shared by source-only training and the MLSL rounds."""
import logging

import mxnet as mx

from ..evaluation import evaluate
from ..evaluation.report import read_evaluation, write_evaluation
from ..model import MLSLNet, init_params
from ..model.weight_files import load_network_weights
from ..model.weights import save_weights
from ..profiles import field_value
from .inputs import weights_kind

logger = logging.getLogger(__name__)


def build_network(config, ctx_list, weights):
    """MLSLNet of the run, initialised (seeded) and loaded from ``weights``.

    ademxapp/CBST files fill the trunk and segmentation head; our Gluon files fill everything
    they hold; the classification branch, absent from ademxapp files, keeps its seeded init.
    Its variant and initialisation are the profile's (``model.cls_head``, ``model.cls_init``).
    """
    net = MLSLNet(config.num_classes, width=config.model.width, with_classifier=config.use_pwl,
                  freeze_bn=config.model.freeze_bn, cls_head=field_value(config, "model.cls_head"),
                  cls_init=field_value(config, "model.cls_init"))
    mx.random.seed(config.experiment.seed)
    init_params(net, ctx=ctx_list)
    weights_kind(weights, config.num_classes)
    kind = load_network_weights(net, weights, ctx=ctx_list).kind
    net.hybridize()
    return net, kind


def evaluate_round(run, config, net, data, ctx_list, out_dirs, metadata, progress=True):
    """Step 3: evaluate on the target val set, write iou.json into ``out_dirs``, log per-class IoU."""
    if data.target_val is None:
        return None
    matrix = evaluate(net, data.target_val, ctx_list, flip=config.eval.flip, scales=tuple(config.eval.scales),
                      num_classes=config.num_classes, progress=progress)
    for out_dir in out_dirs:
        summary = write_evaluation(out_dir, matrix, metadata)
    run.log("eval", **metadata, miou=summary["miou"], miou13=summary.get("miou13"), iou=summary["iou"],
            class_names=summary["class_names"])
    logger.info("round %s (%s): mIoU %.2f%%", metadata["round"], metadata["method"],
                100 * (summary["miou"] or 0.0))
    return summary


def finish(run, config, net, data, ctx_list, progress=True):
    """Final weights (Gluon file), final evaluation in the run folder, and the run summary."""
    save_weights(net, run.path / "final.params")
    final = read_evaluation(run.path) if (run.path / "iou.json").is_file() else evaluate_round(
        run, config, net, data, ctx_list, [run.path], {"round": "final", "method": config.experiment.method},
        progress)
    rounds = [r for r in run.read_log("eval") if isinstance(r.get("round"), int)]
    return {"method": config.experiment.method, "source": config.experiment.source,
            "final_weights": str(run.path / "final.params"),
            "round_miou": {str(r["round"]): r["miou"] for r in rounds},
            "miou": None if final is None else final["miou"],
            "miou13": None if final is None else final.get("miou13")}

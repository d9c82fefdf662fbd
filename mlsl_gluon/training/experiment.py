"""One training run from start to DONE: check inputs, open the run folder, dispatch the method."""
import logging

from ..preflight import check_output_folder
from .distributed import process_kvstore
from .inputs import check_source_stats, open_datasets, weights_kind
from .rounds import run_rounds
from .run_folder import RunFolder
from .source_only import run_source_only
from .stage import no_event, worker_shard
from .worker_group import worker_folder

logger = logging.getLogger(__name__)


def run_experiment(config, data_root, weights, out, ctx_list, *, kvstore="device", resume=False,
                   on_event=no_event, progress=True, break_lock=False):
    """Run (or resume) ``config``'s method and return its summary.

    Every input is checked before the run folder is touched, so a missing data set or weight
    file stops the run before anything starts.

    Parameters
    ----------
    config : Config
    data_root : str or Path
        Folder with GTA5/, SYNTHIA/ and Cityscapes/ (names in ``config.data``).
    weights : str or Path
        Source model (adaptation methods) or ImageNet / source model (source-only).
    out : str or Path
        Run folder.
    ctx_list : list of mx.Context
    kvstore : str
        MXNet kvstore type. With ``dist_*`` every worker runs this same call: rank 0 writes
        ``out``, rank r > 0 ``out/worker<r>`` (each a full run folder). ``out`` must be one folder all
        workers see (see :mod:`.worker_group`): in every round each labels its shard of the
        target set into rank 0's round folder and all train on the combined labels, each on
        its shard of every epoch; the gradients of all workers are summed at every step, so
        all end with the same parameters.
    resume : bool
        Continue the run in ``out`` (its config may differ only in ``RESUMABLE_CHANGES``).
    on_event : callable
        Hook ``on_event(name, **info)``; tests use it to inject faults.
    break_lock : bool
        Take over a lock another host left on ``out``.

    Returns
    -------
    dict
        The summary also written to ``out/DONE``.
    """
    weights_kind(weights, config.num_classes, config.model.width)
    check_source_stats(config)
    check_output_folder(out)
    data = open_datasets(config, data_root)
    kvstore = process_kvstore(kvstore)
    rank, _ = worker_shard(kvstore)
    # Workers started with one command line share --out: rank 0 owns it, rank r its worker<r>.
    run = RunFolder(worker_folder(out, rank), config, resume=resume, break_lock=break_lock)
    try:
        if run.done:
            logger.info("%s already finished; nothing to do", run.path)
            return run.read_summary()
        method = run_source_only if config.experiment.method == "source-only" else run_rounds
        summary = method(run, config, data, weights, ctx_list, kvstore=kvstore, on_event=on_event,
                         progress=progress)
        run.mark_done(summary)
    finally:
        run.close()
    logger.info("run %s finished: mIoU %s", run.path, summary.get("miou"))
    return summary

"""Run every row of the paper's Table 1 (GTA5), 2 (SYNTHIA) or 4 (ablations); print ours beside the paper's.

Full mode (``make reproduce-table1 DATA_ROOT=... WEIGHTS_DIR=...``): each row is one
``mlsl-gluon train`` run in ``OUT/<source>_<method>`` with ``experiments/<source>_<method>.yaml``,
resumed when it already exists; the source-only row evaluates the CBST source model.

Smoke mode (``SMOKE=1``): the same steps end to end on tiny generated data in the real folder
formats, with a reduced-width network and few patches / images / epochs, on CPU. Only sizes
change: the source model is trained by the source-only row (from a random "ImageNet" file in
the ademxapp format) and every adaptation row starts from it.

Table 4 (``tools/reproduce.py table4``): the lambda_cls and eta ablations of GTA5 SISC+PWL
(``experiments/ablation_{lambda_cls,eta}_*.yaml``), mIoU only.

Profiles (``--profile``, docs/ARCHITECTURE.md "Profiles"): ``released`` (default; the authors'
code, which produced the paper's numbers) runs into ``OUT/<row>``, ``paper`` (the paper's text)
into ``OUT/paper/<row>``; the paper profile of Table 1 also runs Table 4's lambda_cls rows, whose
values are on the paper's scale. ``both`` runs the released profile and then the paper one; in
smoke mode the paper profile then runs its source-only and SISC+PWL rows only (the row with the
most differences), which keeps the smoke run near its single-profile time. Every printed table
names its profile.

Several hosts (``--kvstore dist_sync``, README "Several GPUs and several hosts"): every host runs
this driver with the same arguments and OUT on a folder all of them mount at the same path. A
ps-lite cluster serves one network and ends when its workers exit, so every row gets a cluster
of its own: the driver starts this host's ``--local-workers`` workers of the row (each an
``mlsl-gluon train ... --kvstore dist_sync`` subprocess), and on the ``--serve`` host also its
scheduler and server; row i (counted over every row this invocation runs) uses port
``--scheduler``'s port + i. A row whose rank-0 folder holds DONE is reused without a cluster.
"""
import argparse
import dataclasses
import logging
import os
import socket
import sys
import time
from pathlib import Path

import click
import mxnet as mx

from mlsl_gluon.cli import main as cli_main
from mlsl_gluon.profiles import PROFILES

ROOT = Path(__file__).resolve().parents[1]
TABLES = {"table1": "gta5", "table2": "synthia", "table4": "gta5"}
METHODS = ("source-only", "cbst", "cbst-pwl", "sisc", "sisc-pwl")
WEIGHT_FILES = {"gta5": "gta_rna-a1_cls19_s8_ep-0000.params",
                "synthia": "synthia_rna-a1_cls16_s8_ep-0000.params"}

# Smoke sizes: everything else (the steps, the schedule's shape, the file formats) is unchanged.
SMOKE_SIZES = [
    "model.width=0.0625", "data.crop_size=48", "data.gta5_frame_size=null", "data.scale_range=[0.9, 1.1]",
    "pseudo_label.K=3", "pseudo_label.patch_size=40", "pseudo_label.longer_side=96",
    "rounds.num_rounds=2", "rounds.epochs_per_round=1", "rounds.source_portion_start=0.25",
    "rounds.source_portion_step=0.05", "rounds.source_portion_max=0.5",
    "source_only.epochs=2", "source_only.batch_size=4", "source_only.lr=0.01",
    "train.log_every=2", "train.checkpoint_every=2",
    # Forking loader workers costs more than reading a few 48x96 frames (same batches either way).
    "train.loader_workers=0",
]
SMOKE_DATA = {"n_source": 8, "n_target_train": 4, "n_target_val": 2, "size": (48, 96)}
SMOKE_SEED = 0
SMOKE_SECOND_PROFILE_ROWS = ("source-only", "sisc-pwl")
PROFILE_CHOICES = PROFILES + ("both",)
PROFILE_TITLES = {"released": "the authors' released code", "paper": "the paper text"}

logger = logging.getLogger("reproduce")
#: Seconds a host that does not serve waits for the serving host's smoke inputs.
SMOKE_INPUT_TIMEOUT = 600.0
#: Seconds a row's DONE, written by rank 0 on any host, may take to become visible here.
DONE_VISIBILITY_TIMEOUT = 60.0


@dataclasses.dataclass(frozen=True)
class Cluster:
    """This host's part in the dist_sync cluster of every row.

    Attributes
    ----------
    kvstore : str
        ``dist_sync`` or ``dist_device_sync``.
    scheduler : str
        The scheduler host's address as every host reaches it.
    port : int
        Port of the first row's scheduler; row i uses ``port + i``.
    num_workers : int
        Workers of each row's cluster, over all hosts.
    local_workers : int
        Workers this host starts for each row.
    serve : bool
        This host also runs each row's scheduler and server (exactly one host does).
    node_host : str or None
        This host's address as the others reach it (None: ps-lite picks one).
    """

    kvstore: str
    scheduler: str
    port: int
    num_workers: int
    local_workers: int = 1
    serve: bool = False
    node_host: str = None


class RowRunner:
    """Runs one row's ``mlsl-gluon train``: in this process, or as this host's part of a fresh
    dist_sync cluster per row (``cluster``)."""

    def __init__(self, cluster=None):
        self.cluster = cluster
        self.rows = 0  # rows met so far: each row's port, the same on every host
        self.started = []  # run folders this runner started a cluster for

    @property
    def writes_tables(self):
        """Whether this host writes the table files (one host of a cluster does)."""
        return self.cluster is None or self.cluster.serve

    def __call__(self, args, folder):
        if self.cluster is None:
            # In-process: one interpreter (and one MXNet start-up) for the whole table.
            cli_main(args, standalone_mode=False)
            return folder
        from mlsl_gluon.training.cluster import ClusterAddress, run_cluster_part

        cluster, port = self.cluster, self.cluster.port + self.rows
        self.rows += 1
        if (folder / "DONE").is_file():
            logger.info("%s finished already: reused", folder)
            return folder
        logs = folder.parent / "cluster_logs" / folder.name / f"{socket.gethostname()}-{os.getpid()}"
        logs.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-c", "from mlsl_gluon.cli import main; main()"] + list(args)
        argv += ["--kvstore", cluster.kvstore] + ([] if "--no-progress" in args else ["--no-progress"])
        self.started.append(folder)
        run_cluster_part(argv, ClusterAddress(cluster.scheduler, port, cluster.num_workers),
                         local_workers=cluster.local_workers, serve=cluster.serve,
                         node_host=cluster.node_host, log_dir=str(logs))
        # Rank 0 wrote DONE before any worker exited (they leave together), maybe on another host:
        # a network file system may show it here a little later.
        deadline = time.monotonic() + DONE_VISIBILITY_TIMEOUT
        while not (folder / "DONE").is_file():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the dist_sync workers of {folder} exited, but its DONE file is not "
                                   f"there after {DONE_VISIBILITY_TIMEOUT:.0f} s; see {logs}")
            time.sleep(1.0)
        return folder


def write_random_ademxapp_weights(path, num_classes, width, seed=0, with_head=False):
    """An ademxapp-format file with seeded random values, for smoke runs and tests.

    Without ``with_head`` it is ImageNet-style (trunk only, as ilsvrc-cls_rna-a1_cls1000_ep-0001);
    with it, a CBST-style source model (``conv6a`` and ``linear<C>`` included).
    """
    from mlsl_gluon.model import MLSLNet, init_params
    from mlsl_gluon.model.weights import ademxapp_param_map

    net = MLSLNet(num_classes, width=width, with_classifier=False)
    mx.random.seed(seed)
    init_params(net)
    arrays = {k: p.data() for k, p in ademxapp_param_map(net).items()
              if with_head or not k.startswith(("arg:conv6a", "arg:linear"))}
    mx.nd.save(str(path), arrays)
    return path


def make_smoke_inputs(root, source, wait=False):
    """Tiny data set in the real layout under ``root/data`` and a random ImageNet-style file.

    With ``wait`` (hosts of a cluster that do not serve) another host makes them: wait for them.
    """
    from mlsl_gluon.demo.synthetic import generate_demo_data

    data_root = root / "data"
    marker = data_root / f".{source}-complete"
    imagenet = root / "ilsvrc-cls_rna-a1_cls1000_ep-0001.params"
    if wait:
        deadline = time.monotonic() + SMOKE_INPUT_TIMEOUT
        while not (marker.is_file() and imagenet.is_file()):
            if time.monotonic() > deadline:
                raise SystemExit(f"the serving host wrote no smoke inputs ({marker}, {imagenet}) within "
                                 f"{SMOKE_INPUT_TIMEOUT:.0f} s: is {root} shared by every host?")
            time.sleep(1.0)
        return data_root, imagenet
    if not marker.is_file():
        generate_demo_data(data_root, seed=SMOKE_SEED, source_format=source, **SMOKE_DATA)
        marker.write_text("ok\n")
    if not imagenet.is_file():
        partial = imagenet.with_name(imagenet.name + ".partial")
        write_random_ademxapp_weights(partial, 19 if source == "gta5" else 16, 0.0625, SMOKE_SEED)
        os.replace(partial, imagenet)  # complete when it appears (other hosts wait for it)
    return data_root, imagenet


def table_rows(table):
    """``{row key of experiments/paper_tables.yaml: experiments/<stem>.yaml}`` of one table."""
    if table == "table4":
        values = {"lambda_cls": ("0.1", "0.05", "0.025", "0.001"), "eta": ("0.0", "0.1", "0.05", "0.025")}
        return {f"{name}={v}": f"ablation_{name}_{v}" for name, vs in values.items() for v in vs}
    return {method: f"{TABLES[table]}_{method.replace('-', '_')}" for method in METHODS}


def profile_folder(out, profile):
    """Where one profile's run folders and tables go: OUT (released) or OUT/<profile>."""
    return Path(out) if profile == "released" else Path(out) / profile


def train_command(stem, data_root, weights, out, overrides, ctx="cpu", profile="released"):
    """The ``mlsl-gluon train`` arguments of one row (always resumable) and its run folder."""
    cmd = ["train", "--config", str(ROOT / "experiments" / f"{stem}.yaml"),
           "--data-root", str(data_root), "--weights", str(weights), "--out", str(out / stem),
           "--ctx", ctx, "--resume", "--profile", profile]
    for item in overrides:
        cmd += ["--set", item]
    return cmd, out / stem


def reproduce(table, data_root, weights_dir, out, smoke=False, extra=(), ctx="cpu", profile="released",
              rows=None, runner=None):
    """Run the rows of ``table`` in one profile and return ``{row key: run folder}``.

    Every adaptation row starts from the source model: the CBST file in ``weights_dir``, or in
    smoke mode the model the source-only row trains (run first also for Table 4). The run
    folders are in :func:`profile_folder`; ``rows`` (keys of :func:`table_rows`) limits the rows.
    ``runner`` (a :class:`RowRunner`, default in-process) runs each row.
    """
    runner = runner or RowRunner()
    source = TABLES[table]
    inputs = Path(out)
    out = profile_folder(inputs, profile)
    out.mkdir(parents=True, exist_ok=True)
    overrides = list(SMOKE_SIZES if smoke else []) + list(extra)
    if smoke:
        data_root, imagenet = make_smoke_inputs(inputs, source, wait=not runner.writes_tables)
    else:
        source_weights = Path(weights_dir) / WEIGHT_FILES[source]

    def run(stem, weights):
        args, folder = train_command(stem, data_root, weights, out, overrides, "cpu" if smoke else ctx,
                                     profile)
        args += ["--no-progress"] if smoke else []
        logger.info("%s %s: mlsl-gluon %s", table, stem, " ".join(args))
        return runner(args, folder)

    if smoke:
        source_weights = run(f"{source}_source_only", imagenet) / "final.params"
    runs = {}
    for key, stem in table_rows(table).items():
        if rows is not None and key not in rows:
            continue
        if key == "source-only":
            runs[key] = out / stem if smoke else run(stem, source_weights)
        else:
            runs[key] = run(stem, source_weights)
    return runs


def print_table(table, runs, out, profile="released", write=True):
    """Print ours beside the paper's under a line naming the profile; with ``write`` also into ``out``."""
    from mlsl_gluon.evaluation.tables import format_table, write_table

    print(f"Profile: {profile} ({PROFILE_TITLES[profile]}; docs/ARCHITECTURE.md, Profiles)")
    print(format_table(table, runs))
    if write:
        write_table(out, table, runs)


def lambda_rows():
    """Table 4's lambda_cls row keys (run with Table 1 in the paper profile)."""
    return tuple(key for key in table_rows("table4") if key.startswith("lambda_cls="))


def reproduce_profiles(table, data_root, weights_dir, out, smoke=False, extra=(), ctx="cpu",
                       profile="released", runner=None):
    """Run and print ``table`` in ``profile`` (or both); returns ``[(profile, table, runs)]``."""
    runner = runner or RowRunner()
    done = []
    for name in (PROFILES if profile == "both" else (profile,)):
        rows = SMOKE_SECOND_PROFILE_ROWS if smoke and profile == "both" and name != PROFILES[0] else None
        runs = reproduce(table, data_root, weights_dir, out, smoke, extra, ctx, name, rows, runner)
        print_table(table, runs, profile_folder(out, name), name, runner.writes_tables)
        done.append((name, table, runs))
        if name == "paper" and table == "table1" and not smoke:
            # Table 4's lambda_cls values weigh the paper's loss (lambda 0.025 in Eq. 6).
            runs = reproduce("table4", data_root, weights_dir, out, smoke, extra, ctx, name, lambda_rows(),
                             runner)
            print_table("table4", runs, profile_folder(out, name), name, runner.writes_tables)
            done.append((name, "table4", runs))
    return done


def cluster_of(args, parser):
    """The :class:`Cluster` the command line asks for (None without a ``dist_*`` kvstore)."""
    if not args.kvstore.startswith("dist"):
        return None
    if not args.scheduler or not args.workers:
        parser.error(f"--kvstore {args.kvstore} needs --scheduler HOST:PORT and --workers N")
    host, _, port = args.scheduler.rpartition(":")
    if not host or not port.isdigit():
        parser.error(f"--scheduler must be HOST:PORT (the first row's port), got {args.scheduler!r}")
    return Cluster(args.kvstore, host, int(port), args.workers, args.local_workers, args.serve,
                   args.node_host)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("table", choices=sorted(TABLES))
    parser.add_argument("--data-root", help="folder with GTA5/, SYNTHIA/, Cityscapes/ (unused with --smoke)")
    parser.add_argument("--weights-dir", help="folder with the CBST source models (not used with --smoke)")
    parser.add_argument("--out", required=True, help="folder receiving one run folder per row and the table")
    parser.add_argument("--smoke", action="store_true", help="tiny generated data, reduced sizes, CPU")
    parser.add_argument("--ctx", default="cpu", help="devices of the full runs, e.g. gpu:0 or gpu:0,1")
    parser.add_argument("--set", dest="extra", action="append", default=[], help="extra config override")
    parser.add_argument("--profile", choices=PROFILE_CHOICES, default="released",
                        help="released (default), paper, or both (in smoke mode the second profile "
                             "runs the source-only and SISC+PWL rows only)")
    dist = parser.add_argument_group("several hosts (README: Several GPUs and several hosts)")
    dist.add_argument("--kvstore", default="device",
                      help="dist_sync or dist_device_sync: every row runs as one dist_sync cluster")
    dist.add_argument("--scheduler", help="HOST:PORT of the first row's scheduler (row i: PORT + i)")
    dist.add_argument("--workers", type=int, help="workers of every row's cluster, over all hosts")
    dist.add_argument("--local-workers", type=int, default=1, help="workers this host starts (default 1)")
    dist.add_argument("--serve", action="store_true",
                      help="this host also runs every row's scheduler and server (one host only)")
    dist.add_argument("--node-host", help="this host's address as the others reach it (DMLC_NODE_HOST)")
    args = parser.parse_args(argv)
    cluster = cluster_of(args, parser)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.smoke and not (args.data_root and args.weights_dir):
        parser.error("--data-root and --weights-dir are required without --smoke")
    try:
        reproduce_profiles(args.table, args.data_root, args.weights_dir, args.out, args.smoke,
                           extra=args.extra, ctx=args.ctx, profile=args.profile, runner=RowRunner(cluster))
    except click.ClickException as err:
        sys.exit(f"reproduce {args.table}: {err.format_message()}")


if __name__ == "__main__":
    main()

"""Our results beside the paper's published rows (Tables 1, 2 and 4), with the difference.

The published numbers are data in ``experiments/paper_tables.yaml``. Our results are given per
method as a ConfusionMatrix, a run folder / ``iou.json`` written by ``mlsl-gluon evaluate``, or a
dict ``{'iou': [...]}`` of per-class IoU fractions in [0, 1] (as ``ConfusionMatrix.iou()``).
Everything printed is in percent.
"""
import json
import logging
import math
from pathlib import Path

import numpy as np
import yaml

from ..data.classes import MIOU13_CLASSES
from .confusion import ConfusionMatrix
from .report import evaluation_summary, read_evaluation

logger = logging.getLogger(__name__)

METHODS = ("source-only", "cbst", "cbst-pwl", "sisc", "sisc-pwl")
CLASS_TABLES = ("table1", "table2")


def default_tables_path():
    """``experiments/paper_tables.yaml`` of this checkout."""
    return Path(__file__).resolve().parents[2] / "experiments" / "paper_tables.yaml"


def load_paper_tables(path=None):
    """Read and check the published tables.

    Returns
    -------
    dict
        ``{'table1': {...}, 'table2': {...}, 'table4': {...}}`` as in the YAML file.

    Raises
    ------
    ValueError
        Naming the file and the entry when a table, row or class count is malformed.
    """
    path = Path(path) if path is not None else default_tables_path()
    try:
        tables = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"{path}: cannot read the paper tables ({err})") from err
    for name in (*CLASS_TABLES, "table4"):
        if not isinstance(tables, dict) or not isinstance(tables.get(name), dict):
            raise ValueError(f"{path}: missing table '{name}'")
        if not isinstance(tables[name].get("rows"), dict):
            raise ValueError(f"{path}: table '{name}' has no 'rows' mapping")
    for name in CLASS_TABLES:
        table = tables[name]
        count = table.get("num_classes")
        if len(table.get("columns", [])) != count:
            raise ValueError(f"{path}: {name} has {len(table.get('columns', []))} columns "
                             f"for num_classes {count}")
        if set(table["rows"]) != set(METHODS):
            raise ValueError(f"{path}: {name} rows {sorted(table['rows'])} != {sorted(METHODS)}")
        for method, row in table["rows"].items():
            iou = row.get("iou")
            if iou is not None and (len(iou) != count or not all(
                    isinstance(v, (int, float)) for v in iou)):
                raise ValueError(f"{path}: {name}.{method}.iou must hold {count} numbers")
    return tables


def _fractions_to_scores(iou, num_classes, source):
    iou = np.array([np.nan if v is None else v for v in iou], dtype=np.float64)
    if iou.shape != (num_classes,):
        raise ValueError(f"{source}: {iou.size} per-class IoU values for a {num_classes}-class table")
    if np.nanmax(np.abs(iou), initial=0.0) > 1.0:
        raise ValueError(f"{source}: IoU values above 1; expected fractions in [0, 1], not percent")
    pct = 100.0 * iou
    scores = {"iou": pct, "miou": _nanmean(pct)}
    if num_classes == 16:
        scores["miou13"] = _nanmean(pct[list(MIOU13_CLASSES)])
    return scores


def _nanmean(values):
    values = np.asarray(values, dtype=np.float64)
    return float("nan") if np.all(np.isnan(values)) else float(np.nanmean(values))


def our_scores(result, num_classes=None):
    """Percent scores ``{'iou': (C,), 'miou', ['miou13']}`` of one of our results.

    Parameters
    ----------
    result : ConfusionMatrix, str, Path or dict
        A matrix; a run folder or ``iou.json``; or ``{'iou': fractions}``; or, for Table 4,
        ``{'miou': fraction}``.
    num_classes : int, optional
        Expected class count (19 for table1, 16 for table2); None for mIoU-only results.
    """
    source = result if isinstance(result, (str, Path)) else type(result).__name__
    if isinstance(result, ConfusionMatrix):
        result = evaluation_summary(result)
    elif isinstance(result, (str, Path)):
        result = read_evaluation(result)
    if not isinstance(result, dict):
        raise TypeError(f"cannot read a result from {type(result).__name__}")
    if result.get("iou") is not None:
        count = num_classes if num_classes is not None else len(result["iou"])
        return _fractions_to_scores(result["iou"], count, source)
    if num_classes is None and result.get("miou") is not None:
        if not 0.0 <= result["miou"] <= 1.0:
            raise ValueError(f"{source}: mIoU {result['miou']} is not a fraction in [0, 1]")
        return {"miou": 100.0 * result["miou"]}
    raise ValueError(f"{source}: no per-class 'iou' in the result")


def table_rows(table, results, paper=None):
    """Structured rows: per method run, our scores, the paper's, and ours minus the paper's.

    Parameters
    ----------
    table : {'table1', 'table2', 'table4'}
    results : dict
        ``{method: result}`` (methods from :data:`METHODS`; for table4 ``'lambda_cls=0.1'``,
        ``'eta=0.05'``...); see :func:`our_scores` for a result's forms.
    paper : dict, optional
        Output of :func:`load_paper_tables` (default: read the default file).

    Returns
    -------
    list of dict
        ``{'method', 'label', 'ours', 'paper' (None if unpublished), 'diff', 'note'}`` in the
        paper's row order; score dicts hold 'iou' (percent list), 'miou', 'miou13' as applicable.
    """
    paper = paper if paper is not None else load_paper_tables()
    if table not in paper:
        raise ValueError(f"unknown table {table!r}; expected one of {sorted(paper)}")
    spec = paper[table]
    unknown = sorted(set(results) - set(spec["rows"]))
    if unknown:
        raise ValueError(f"{table}: unknown method(s) {unknown}; expected some of {list(spec['rows'])}")
    rows = []
    for method, published in spec["rows"].items():
        if method not in results:
            continue
        ours = our_scores(results[method], spec.get("num_classes"))
        theirs = _published_scores(published)
        diff = None
        if theirs is not None:
            diff = {k: np.asarray(ours[k]) - np.asarray(theirs[k]) for k in ours if k in theirs}
        rows.append({"method": method, "label": published.get("label", method), "ours": ours,
                     "paper": theirs, "diff": diff, "note": published.get("note")})
    return rows


def _published_scores(row):
    if row.get("miou") is None:
        return None
    scores = {"miou": float(row["miou"])}
    if row.get("iou") is not None:
        scores["iou"] = np.asarray(row["iou"], dtype=np.float64)
    if row.get("miou13") is not None:
        scores["miou13"] = float(row["miou13"])
    return scores


def _columns(table, spec):
    keys = (["iou"] if table in CLASS_TABLES else []) + ["miou"]
    headers = list(spec.get("columns", [])) + ["mIoU"]
    if spec.get("num_classes") == 16:
        keys.append("miou13")
        headers.append("mIoU*")
    return keys, headers


def _cells(scores, keys, signed=False):
    if scores is None:
        return None
    cells = []
    for key in keys:
        values = scores.get(key)
        values = np.atleast_1d(np.nan if values is None else values)
        cells.extend("-" if math.isnan(v) else (f"{v:+.1f}" if signed else f"{v:.1f}") for v in values)
    return cells


def _grid(table, results, paper):
    paper = paper if paper is not None else load_paper_tables()
    rows = table_rows(table, results, paper)
    spec = paper[table]
    keys, headers = _columns(table, spec)
    lines = []
    for row in rows:
        blank = ["-"] * len(headers)
        lines.append((row["label"], "ours", _cells(row["ours"], keys)))
        lines.append(("", "paper", _cells(row["paper"], keys) or blank))
        lines.append(("", "diff", _cells(row["diff"], keys, signed=True) or blank))
    return spec, headers, lines


def format_table(table, results, paper=None):
    """Plain-text side-by-side table (percent): per method, rows 'ours', 'paper', 'diff'.

    See :func:`table_rows` for the arguments.
    """
    spec, headers, lines = _grid(table, results, paper)
    name_w = max([len("Method")] + [len(label) for label, _, _ in lines]) + 1
    widths = [max(len(h), 5) for h in headers]
    out = [spec.get("title", table),
           f"{'Method':<{name_w}}{'':<6}" + " ".join(f"{h:>{w}}" for h, w in zip(headers, widths))]
    out.append("-" * len(out[-1]))
    for label, kind, cells in lines:
        out.append(f"{label:<{name_w}}{kind:<6}" + " ".join(f"{c:>{w}}" for c, w in zip(cells, widths)))
    return "\n".join(out) + "\n"


def format_markdown(table, results, paper=None):
    """The same table as :func:`format_table` in Markdown."""
    spec, headers, lines = _grid(table, results, paper)
    out = [f"**{spec.get('title', table)}**", "",
           "| Method | | " + " | ".join(headers) + " |",
           "|---|---|" + "---:|" * len(headers)]
    for label, kind, cells in lines:
        out.append(f"| {label} | {kind} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def _jsonable(scores):
    if scores is None:
        return None
    return {k: [None if math.isnan(v) else float(v) for v in np.atleast_1d(s)] if k == "iou"
            else (None if math.isnan(s) else float(s)) for k, s in scores.items()}


def write_table(out_dir, table, results, paper=None):
    """Write ``<table>.md``, ``<table>.txt`` and ``<table>.json`` into ``out_dir``.

    Returns
    -------
    dict
        ``{'md': Path, 'txt': Path, 'json': Path}``.
    """
    paper = paper if paper is not None else load_paper_tables()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {ext: out_dir / f"{table}.{ext}" for ext in ("md", "txt", "json")}
    paths["md"].write_text(format_markdown(table, results, paper))
    paths["txt"].write_text(format_table(table, results, paper))
    rows = [dict(r, ours=_jsonable(r["ours"]), paper=_jsonable(r["paper"]), diff=_jsonable(r["diff"]))
            for r in table_rows(table, results, paper)]
    paths["json"].write_text(json.dumps({"table": table, "title": paper[table].get("title"),
                                         "units": "percent", "rows": rows}, indent=2))
    logger.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return paths

"""Evaluation that decides whether to ship, and `encoderfit eval`, for any task.

On a run's own data: predictions on validation and test (reused when the same model made them), the head fitted on
validation (the task's: temperature and threshold, per-label thresholds, a conformal interval) and saved where
predict and serve read it, every metric of both splits under that head, the training examples worth a look, the
baseline, the report and the model card. On other data: the same metrics under the saved head.
"""

from __future__ import annotations

import logging
import re
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Dict, Optional

from ..core.args import ReportOverrides
from ..core.errors import UserError
from ..core.files import check_output_file, check_writable, write_json
from ..runs.rundir import RunDir
from ..runs.verdict import analyse, intervals, predict_split
from ..runs.evaluation import check_same_splits, evaluate_run

log = logging.getLogger(__name__)


@contextmanager
def eval_flags():
    """The data checks name train's flags for the columns (--data.text_pair_column); eval's own are --text_column,
    --text_pair_column and --label_column: their messages name those."""
    try:
        yield
    except UserError as err:
        raise UserError(re.sub(r"--data\.(text_column|text_pair_column|label_column)\b", r"--\1", str(err))) from None


def evaluate(
    run: Path,
    data: Optional[str] = None,
    split: str = "test",
    text_column: Optional[str] = None,
    text_pair_column: Optional[str] = None,
    label_column: Optional[str] = None,
    report: ReportOverrides = ReportOverrides(),
    output: Optional[Path] = None,
    device: Optional[str] = None,
) -> Dict:
    """Score a trained run: metrics, the head's decisions (calibration, thresholds, intervals), error analysis, report.

    Args:
        run: Run directory written by `encoderfit train`.
        data: Labelled data to score: a file, a directory of split files, a hub dataset or a recipe. Default: the
            run's own data, split exactly as in training; then the head fitted on validation, the report and the
            model card are refreshed as well (predictions of the same model are reused, not recomputed).
        split: Which split to print (train, validation or test). A single file given as --data is scored whole.
        text_column: Column holding the text. Default: the run's data.text_column.
        text_pair_column: Column holding the second text of a pair. Default: the run's data.text_pair_column.
        label_column: Column holding the target. Default: the run's data.label_column.
        report: Report settings to change, e.g. --report.target_accuracy 0.995 (each one given replaces the run's
            own and is saved in its config.yaml; the others stay).
        output: Where to write the metrics JSON for --data. Default: RUN/eval/<split>.json.
        device: Device to run on (cpu, cuda, cuda:1). Default: cuda when available.
    """
    from ..data.sources import load_source
    from ..runs.splits import prepare
    from ..runs.predictor import Predictor
    from ..core.tables import print_evaluation

    rundir = RunDir(run)
    cfg = rundir.config()
    cfg.report = report.apply(cfg.report)
    task = rundir.task("eval")
    args = replace(cfg.data, text_column=text_column or cfg.data.text_column,
                   text_pair_column=text_pair_column or cfg.data.text_pair_column,
                   label_column=label_column or cfg.data.label_column)
    if data is None and split not in ("validation", "test"):
        raise UserError(f"--split: '{split}' must be validation or test for the run's own data")
    if output:  # a directory there would be found only after the whole evaluation
        check_output_file(Path(output), "--output", f"{split}.json")
    else:
        check_writable(rundir / RunDir.METRICS, "run")
    predictor = Predictor.from_pretrained(run, device=device)
    if predictor.labels != cfg.labels:
        raise UserError(f"{run}: the model's labels differ from config.yaml's; the run directory is inconsistent")
    if data is None:
        with eval_flags():
            splits = prepare(args, cfg.task, cfg.options, settle=False)
        check_same_splits(run, cfg.resolved.get("splits"), splits)
        results = evaluate_run(rundir, replace(cfg, data=args), predictor, splits)
        rundir.save_config(cfg)
        print_evaluation(results, split, task, cfg.labels)
        return results[split]
    loaded = load_source(data, None)
    name = split if split in loaded else (next(iter(loaded)) if len(loaded) == 1 else None)
    if name is None:
        raise UserError(f"--split: no split '{split}' in {data}; splits are {list(loaded)}")
    where = f"{data} [{name}]"
    with eval_flags():
        ds = task.targets.canonical(loaded[name], args, where)
        ds = task.targets.encode(ds, task.targets.read_targets(ds, args, where), cfg.labels, where)
    preds = predict_split(predictor, ds)
    results = analyse(task, {name: preds}, cfg, predictor.head)
    results[name].setdefault("ci", intervals(task, preds, cfg.labels, predictor.head))  # whatever the split is called
    results[name]["data"] = where
    out = Path(output) if output else rundir / RunDir.EVAL / f"{split}.json"
    write_json(out, {**results[name], "head": {k: v for k, v in results.items() if k != name}})
    print_evaluation(results, name, task, cfg.labels)
    log.info("wrote %s", out)
    return results[name]

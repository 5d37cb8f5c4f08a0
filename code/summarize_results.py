"""Print one table of the test results train_wss.sh wrote: means over folds and their spread.

    python code/summarize_results.py --results model/results --methods pce maskmixadv --folds fold1
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from dataloaders import io
from metrics import METRICS


def read_result(path: str, fold: str | None = None, method: str | None = None) -> dict:
    """The summary JSON of ``path``, checked: it scored the test part of ``fold`` (which it must
    record when ``fold`` is given), a checkpoint of ``method`` when it records one (predictions
    of ``--pred_dir`` do not), and holds a finite number for every class of every metric.
    ValueError naming the file."""
    result = io.read_json_object(path)
    if not all(isinstance(result.get(m), dict) and "mean" in result[m] for m in METRICS):
        raise ValueError(f"{path}: not a test_2D_fully.py result (needs dice, hd95, asd per class and mean)")
    scored = scored_of(result)
    if fold is not None and "fold" not in scored:
        raise ValueError(f"{path}: does not record the fold it scored (a result of an older version?); "
                         "score it again with test_2D_fully.py")
    if fold is not None and (scored["fold"] != fold or scored.get("on", "test") != "test"):
        raise ValueError(f"{path}: scored the {scored.get('on', 'test')} part of {scored['fold']}, "
                         f"not the test part of {fold}")
    if method is not None and scored.get("method", method) != method:
        raise ValueError(f"{path}: scored a {scored['method']} checkpoint, not {method}")
    for m in METRICS:
        bad = [c for c, v in result[m].items() if not isinstance(v, (int, float)) or not np.isfinite(v)]
        if bad:
            raise ValueError(f"{path}: {m} of {', '.join(bad)} is not a finite number")
    check_still_scored(path, scored)
    return result


def check_still_scored(path: str, scored: dict) -> None:
    """ValueError naming the result ``path`` when it scored a run that stopped before its last
    iteration (``test_2D_fully.py --unfinished`` records it; for results older than that record,
    the run folder's ``last.pth`` tells where it lies here), or when the checkpoint it ``scored``
    (where it lies here, and the result records its configuration's digest) is no longer that
    checkpoint (the run was replaced or resumed since: another configuration or iteration). A
    copied checkpoint without its run folder, or predictions scored again with ``--pred_dir``, do
    not tell whether their run finished."""
    from checkpoint import config_digest, read_checkpoint, stopped_early

    if "unfinished" in scored:  # recorded by test_2D_fully.py --unfinished: holds wherever the run folder went
        stop = scored["unfinished"]
        raise ValueError(f"{path}: scored a run that stopped at iteration {stop['iteration']} of "
                         f"{stop['max_iterations']} (test_2D_fully.py --unfinished); finish the run (train.py with "
                         "--resume) and score it again")
    checkpoint = scored.get("checkpoint")
    if not checkpoint or "config_sha256" not in scored or not os.path.isfile(checkpoint):
        return
    try:
        ckpt = read_checkpoint(checkpoint)
        stopped = stopped_early(checkpoint)
    except (OSError, ValueError) as e:  # damaged since it was scored: name the result too
        raise ValueError(f"{path}: {e}") from e
    if config_digest(ckpt["config"]) != scored["config_sha256"] or ckpt["iteration"] != scored.get("iteration"):
        raise ValueError(f"{path}: {checkpoint} is no longer the checkpoint it scored "
                         "(another configuration or iteration: was the run replaced or continued?); score it again")
    if stopped:
        raise ValueError(f"{path}: scored {checkpoint} of a run that stopped at iteration {stopped[0]} of "
                         f"{stopped[1]}; finish the run (train.py with --resume) and score it again")


def scored_of(result: dict) -> dict:
    """What test_2D_fully.py recorded about the scoring; {} for predictions of ``--pred_dir``
    and results older than the record."""
    return result.get("scored") or {}


def classes_of(result: dict) -> list[str]:
    return sorted(result["dice"])


def result_units(result: dict) -> str | None:
    """The distance units (mm or voxel) a result records (None when it records none)."""
    return result.get("units")


def root_of(result: dict):
    return scored_of(result).get("root_path")


def scoring_of(result: dict) -> tuple:
    """How a trained run's predictions were made: (post-processing, TTA, resize back); Nones for
    predictions scored from a folder, and for results older than a setting."""
    return tuple(scored_of(result).get(k) for k in ("postprocess", "tta", "resize_back"))


def check_same_setting(results: list[tuple[str, dict]], ignore=()) -> None:
    """ValueError naming the first of one method's (path, result) pairs trained with a flag
    (``--sup_type``, ``--max_iterations``, a method's own) other than the first pair's, where
    results record their training setting: one row would average two settings. A flag only one
    of them records is newer than the other's run, which trained with its default. Flags in
    ``ignore`` may differ."""
    from checkpoint import complete_setting

    recorded = []
    for path, r in results:
        if "setting" in scored_of(r) and "method" in scored_of(r):
            try:
                setting = complete_setting(scored_of(r)["method"], scored_of(r)["setting"])
            except (KeyError, ValueError) as e:
                raise ValueError(f"{path}: {e}") from e
            recorded.append((path, {k: v for k, v in setting.items() if k not in ignore}))
    for path, setting in recorded[1:]:
        first_path, first = recorded[0]
        differ = sorted(k for k in set(setting) | set(first) if setting.get(k) != first.get(k))
        if differ:
            raise ValueError(f"{path}: trained with --{differ[0]} {setting.get(differ[0])!r}, {first_path} with "
                             f"{first.get(differ[0])!r}; one row would average two settings")


def note_roots(roots, what: str = "results scored") -> None:
    """A note on stderr when ``roots`` (one per result or run) differ: the same data may be
    reached by other paths or machines, so a note, not an error."""
    roots = sorted({str(r) for r in roots})
    if len(roots) > 1:
        print(f"note: the {what} data roots {', '.join(roots)}", file=sys.stderr)


def check_same_root(results: list[tuple[str, dict]]) -> None:
    """ValueError naming the first of the (path, result) pairs scored on a data root whose volumes
    (``root_sha256``, :func:`dataloaders.io.root_digest`) differ from the first recording one's:
    e.g. folds scored before and after the root was generated again at the same path. Results
    older than the record are not compared."""
    recorded = [(path, scored_of(r)["root_sha256"]) for path, r in results if "root_sha256" in scored_of(r)]
    roots = dict((path, root_of(r)) for path, r in results)
    for path, digest in recorded[1:]:
        if digest != recorded[0][1]:
            raise ValueError(f"{path}: scored on other data than {recorded[0][0]} (the volumes of {roots[path]} and "
                             f"{roots[recorded[0][0]]} differ: a root converted or generated again?); one table would "
                             "mix them")
    unrecorded = [path for path, r in results if "root_sha256" not in scored_of(r)]
    if recorded and unrecorded:
        print(f"note: {', '.join(unrecorded)} record(s) no digest of the data root (scored before 2026-12-07): "
              "not checked against the others' data", file=sys.stderr)


def check_distinct(paths) -> None:
    """ValueError naming a file or folder given twice (it would count twice)."""
    seen = set()
    for path in paths:
        if os.path.realpath(path) in seen:
            raise ValueError(f"{path}: given twice")
        seen.add(os.path.realpath(path))


def check_same(results: list[tuple[str, dict]], what: str, key) -> None:
    """ValueError naming the first of the (path, result) pairs whose ``key`` (e.g. :func:`classes_of`,
    :func:`result_units`) differs from the first pair's: such results cannot share a table."""
    for path, r in results[1:]:
        if key(r) != key(results[0][1]):
            raise ValueError(f"{path}: its {what} {key(r)} differ from {results[0][0]}'s {key(results[0][1])}")


def check_same_selection(results: list[tuple[str, dict]], mixed: str = "one row") -> None:
    """ValueError naming the first of the (path, result) pairs (one method's, for a row) that
    scored its run's best validation model where the first scored another (``best.pth`` beside
    ``last.pth``), or the other way round; results older than the record are not compared.
    ``mixed`` names what would mix them."""
    recorded = [(path, scored_of(r)["best_model"]) for path, r in results if "best_model" in scored_of(r)]
    model = lambda best: "its run's best validation model" if best \
        else "a model other than its run's best"  # noqa: E731
    for path, best in recorded[1:]:
        if best != recorded[0][1]:
            raise ValueError(f"{path}: scored {model(best)}, {recorded[0][0]} {model(recorded[0][1])}; "
                             f"{mixed} would mix model selections")


def check_same_cases(scored: list[tuple[str, dict]]) -> None:
    """ValueError naming the first (path, record) pair that scored other volumes than the first
    pair recording them: other case names (``cases``), e.g. the same fold of an edited
    splits.json, or the same names with other images or labels (``volumes_sha256``,
    :func:`dataloaders.acdc.volumes_digest`), e.g. a data root converted or generated again.
    Records older than a key are not compared on it."""
    recorded = [(path, sorted(r["cases"])) for path, r in scored if r.get("cases") is not None]
    for path, cases in recorded[1:]:
        first_path, first = recorded[0]
        if cases != first:
            example = (sorted(set(cases) ^ set(first)) or ["a case listed twice"])[0]
            raise ValueError(f"{path}: {len(cases)} volumes, {first_path} {len(first)}, not the same ones (e.g. "
                             f"{example}); their scores cannot be compared")
    digests = [(path, r["volumes_sha256"]) for path, r in scored if r.get("volumes_sha256") is not None]
    for path, digest in digests[1:]:
        if digest != digests[0][1]:
            raise ValueError(f"{path}: its volumes differ from those of {digests[0][0]} under the same case names "
                             "(other images or labels: a data root converted or generated again?); their scores "
                             "cannot be compared")


def scored_part(results: list[tuple[str, dict]]) -> str:
    """The part of the split ("test" or "val") that all the (path, result) pairs scored, of one
    fold; ValueError naming a file given twice or one that scored another part or fold than the
    first (other volumes: such scores cannot be compared)."""
    check_distinct(path for path, _ in results)
    part = lambda r: scored_of(r).get("on", "test")  # noqa: E731
    check_same(results, "scored part of the split", part)
    check_same(results, "scored fold", lambda r: scored_of(r).get("fold"))
    check_same_cases([(path, scored_of(r)) for path, r in results])
    return part(results[0][1]) if results else "test"


def load_results(folder: str, methods, folds, prefix: str = "") -> dict[str, list[dict]]:
    """{method: [summary JSON of each fold found]}; a missing fold is reported on stderr.
    ValueError naming the file for a result that is unreadable or scored something else, when
    the results differ in classes, distance units or data (:func:`check_same_root`; they cannot
    share one table), and when one
    method's folds were trained, selected or predicted differently (:func:`check_same_setting`,
    :func:`check_same_selection`, :func:`scoring_of`: their mean would mix settings), and when two
    methods scored other volumes
    of one fold (:func:`check_same_cases`);
    results of different data roots, one method's folds predicted in different precisions
    (which changes only rounding), and folds whose model was chosen on the test fold are named in
    a note on stderr."""
    out = {}
    for m in methods:
        out[m] = []
        for f in folds:
            path = os.path.join(folder, f"{prefix}{m}_{f}.json")
            if os.path.exists(path):
                out[m].append((path, read_result(path, f, m)))
            else:
                print(f"{m}: no result for {f} ({path})", file=sys.stderr)
        check_same(out[m], "scoring (post-processing, TTA, resize back)", scoring_of)
        check_same_selection(out[m])
        check_same_setting(out[m])
        amps = sorted({str(scored_of(r)["amp"]) for _, r in out[m] if "amp" in scored_of(r)})
        if len(amps) > 1:  # e.g. folds re-tested on CPUs with and without native bf16: rounding only
            print(f"note: {m}'s folds were predicted in different precisions ({', '.join(amps)})", file=sys.stderr)
        peeked = [scored_of(r)["fold"] for _, r in out[m] if scored_of(r).get("selected_on_test")]
        if peeked:  # the peers' protocol: a higher number than a model chosen on validation
            print(f"note: {m}'s {', '.join(peeked)} chose its model on the test fold (--select_on_test)",
                  file=sys.stderr)
    found = [pr for runs in out.values() for pr in runs]
    for f in folds:  # the methods' rows compare their scores on each fold's volumes
        check_same_cases([(path, scored_of(r)) for path, r in found if scored_of(r).get("fold") == f])
    check_same(found, "classes", classes_of)
    check_same(found, "distance units", result_units)
    check_same_root(found)
    note_roots(root_of(r) for _, r in found)
    return {m: [r for _, r in runs] for m, runs in out.items()}


def _row(name: str, n: int | None, runs: list[dict], stat, classes) -> str:
    """One table line: ``stat`` over the folds of Dice (each class and mean), mean HD95 and ASD."""
    v = lambda metric, c: stat([r[metric][c] for r in runs])  # noqa: E731
    return (f"{name:14s} {'' if n is None else n:>5} "
            + "".join(f"{v('dice', c):8.4f}" for c in classes)
            + f"{v('dice', 'mean'):8.4f} {v('hd95', 'mean'):7.2f} {v('asd', 'mean'):7.2f}")


def format_table(results: dict[str, list[dict]]) -> str:
    first = next((runs[0] for runs in results.values() if runs), None)
    classes = [c for c in first["dice"] if c != "mean"] if first else ["RV", "MYO", "LV"]
    lines = [f"{'method':14s} {'folds':>5s} " + "".join(f"{'Dice ' + c if i == 0 else c:>8s}"
                                                     for i, c in enumerate(classes))
             + f"{'mean':>8s} {'HD95':>7s} {'ASD':>7s}"]
    for m, runs in results.items():
        if runs:
            lines.append(_row(m, len(runs), runs, np.mean, classes))
        if len(runs) > 1:  # the spread between folds (sample standard deviation)
            lines.append(_row("  +- std", None, runs, lambda v: np.std(v, ddof=1), classes))
    units = sorted({r.get("units", "n/a") for runs in results.values() for r in runs})
    lines.append(f"distances (HD95, ASD) in {', '.join(units) or 'n/a'}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n")[0])
    p.add_argument("--results", default="model/results", help="folder of <exp>_<fold>.json files")
    p.add_argument("--methods", nargs="+", required=True)
    p.add_argument("--folds", nargs="+", required=True)
    p.add_argument("--exp_prefix", default="")
    args = p.parse_args(argv)
    for flag, values in (("--methods", args.methods), ("--folds", args.folds)):
        twice = sorted({v for v in values if values.count(v) > 1})
        if twice:
            p.error(f"{flag}: {', '.join(twice)} given more than once (a result would count twice)")
    try:
        results = load_results(args.results, args.methods, args.folds, args.exp_prefix)
    except ValueError as e:
        p.exit(2, f"error: {e}\n")
    print(format_table(results))
    return 0 if all(len(r) == len(args.folds) for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

import json

import summarize_results


def result(dice, hd95):
    per = lambda v: {"RV": v, "MYO": v, "LV": v, "mean": v}  # noqa: E731
    return {"dice": per(dice), "hd95": per(hd95), "asd": per(1.0), "n_volumes": 40, "units": "mm"}


def test_table_averages_folds_and_reports_missing_ones(tmp_path, capsys):
    (tmp_path / "pce_fold1.json").write_text(json.dumps(result(0.6, 10.0)))
    (tmp_path / "pce_fold2.json").write_text(json.dumps(result(0.8, 20.0)))
    status = summarize_results.main(["--results", str(tmp_path), "--methods", "pce", "dmpls",
                                     "--folds", "fold1", "fold2"])
    out, err = capsys.readouterr()
    assert status == 1 and "dmpls: no result for fold1" in err
    row = next(line for line in out.splitlines() if line.startswith("pce"))
    assert row.split()[1:] == ["2", "0.7000", "0.7000", "0.7000", "0.7000", "15.00", "1.00"]
    spread = out.splitlines()[out.splitlines().index(row) + 1]  # sample std: 0.1 * sqrt(2), 5 * sqrt(2)
    assert spread.split() == ["+-", "std", "0.1414", "0.1414", "0.1414", "0.1414", "7.07", "0.00"]
    assert "distances (HD95, ASD) in mm" in out

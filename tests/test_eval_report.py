"""Report statistics: means with bootstrap intervals, win rates with ties, failed judgements left out."""

from __future__ import annotations

import pytest

from mira.eval.report import groups, markdown, mean_ci, summarize, to_csv


def rec(sample, method, overall, *, seed=0, error=None, calls=1, seconds=1.0):
    scores = {"sc": overall, "pq": overall, "overall": overall, "error": error}
    return {"key": f"{sample}/{method}/{seed}", "sample_id": sample, "method": method, "seed": seed,
            "scores": None if overall is None and error is None else scores, "editor_calls": calls, "steps": calls,
            "seconds": seconds, "stop_reason": "stop"}


def test_mean_ci_brackets_the_mean_and_narrows_with_more_data():
    small = mean_ci([2.0, 8.0, 5.0, 4.0])
    large = mean_ci([2.0, 8.0, 5.0, 4.0] * 25)
    assert small["mean"] == large["mean"] == pytest.approx(4.75)
    assert small["low"] < 4.75 < small["high"]
    assert large["high"] - large["low"] < small["high"] - small["low"]
    assert mean_ci([3.0]) == {"mean": 3.0, "low": 3.0, "high": 3.0, "n": 1}
    assert mean_ci([])["mean"] is None


def test_win_rate_against_raw_counts_ties_as_half():
    records = [rec("a", "raw", 5), rec("b", "raw", 5), rec("c", "raw", 5), rec("d", "raw", None, error="x"),
               rec("a", "mira", 7, calls=3), rec("b", "mira", 5, calls=2), rec("c", "mira", 4, calls=4),
               rec("d", "mira", 9, calls=1)]
    summary = summarize(records, ["raw", "mira"])
    mira = summary["methods"]["mira"]
    assert mira["win_rate"] == {"vs": "raw", "rate": pytest.approx(0.5), "wins": 1, "ties": 1, "losses": 1, "n": 3}
    assert mira["editor_calls"] == pytest.approx(2.5)
    raw = summary["methods"]["raw"]
    assert raw["judge_failures"] == 1 and raw["overall"]["n"] == 3 and "win_rate" not in raw


def test_tables_show_every_method():
    summary = summarize([rec("a", "raw", 5), rec("a", "plan", 6)])
    table = markdown(summary)
    assert "| raw | 1 |" in table and "| plan | 1 |" in table and "100.0%" in table
    csv = to_csv(summary).splitlines()
    assert csv[2].startswith("plan,1,6.0,6.0,6.0,1") and ",1.0,1,0,0," in csv[2]
    assert "win vs" not in markdown(summarize([rec("a", "mira", 5)]))


def test_complexity_levels_get_their_own_tables():
    records = [rec("a", "raw", 5), rec("a", "mira", 7), rec("b", "raw", 6), rec("b", "mira", 4)]
    for r in records:
        r["meta"] = {"complexity": 2 if r["sample_id"] == "a" else 8}
    split = groups(records)
    assert list(split) == ["complexity"] and list(split["complexity"]) == ["2", "8"]
    summary = summarize(records)
    table = markdown(summary)
    assert "## complexity = 2" in table and "## complexity = 8" in table
    assert summary["by"]["complexity"]["2"]["methods"]["mira"]["win_rate"]["rate"] == 1.0
    assert summary["by"]["complexity"]["8"]["methods"]["mira"]["win_rate"]["rate"] == 0.0
    assert groups([rec("a", "raw", 5)]) == {}

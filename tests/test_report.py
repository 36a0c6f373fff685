"""Merging the summary data of pytest-xdist workers into one table (pure data, no model)."""

from __future__ import annotations

from typing import Any

from shrinktests.report import COLUMNS, merge_data, render


def _part(rows: list[list[str]], tested: list[str], calls: int, **extra: Any) -> dict[str, Any]:
    return {"rows": rows, "tested": tested, "details": extra.get("details", {}),
            "near_ties": extra.get("near_ties", []), "cached_timings": False,
            "model": "M@1", "generate_calls": calls, "hits": 1, "misses": 2, "workers": 1,
            "bench": extra.get("bench", {}), "workload": "4 prompts x 32 new tokens"}


def _row(name: str, verdict: str) -> list[str]:
    return [name, *["-"] * (len(COLUMNS) - 2), verdict]


def test_a_configs_row_comes_from_the_worker_that_tested_it() -> None:
    """Worker 2 only computed the baseline as a reference (its row has no verdicts); worker
    1 ran the baseline's tests, so its row wins whatever the arrival order."""
    w1 = _part([_row("baseline", "ok")], ["baseline"], 1, details={"baseline": "d"})
    w2 = _part([_row("baseline", "skipped"), _row("nf4", "FAIL (1)")], ["nf4"], 2,
               near_ties=["near-tie: nf4 ..."])
    for parts in ([w1, w2], [w2, w1]):
        merged = merge_data(parts, ["baseline", "bf16", "nf4"])
        assert [r[0] for r in merged["rows"]] == ["baseline", "nf4"]
        assert merged["rows"][0][-1] == "ok"
        assert (merged["generate_calls"], merged["hits"], merged["workers"]) == (3, 2, 2)
        assert merged["details"] == {"baseline": "d"}
    lines = render(merge_data([w1, w2], ["baseline", "nf4"]))
    assert lines[0].split()[0] == "config"
    assert "near-tie: nf4 ..." in lines
    assert lines[-1] == ("model M@1; generate calls this run: 3 over 2 workers; "
                         "cache hits 2, misses 4")


def test_render_adds_the_throughput_table_when_benchmarks_ran() -> None:
    bench = {"nf4": {"prompt_eval_tps": 300.0, "generate_tps": 40.0, "vs_reference": 1.5,
                     "load_compress_seconds": 2.0, "peak_rss_mb": 900.0, "model_mb": 173.0,
                     "bits_per_weight": 10.3}}
    lines = render(_part([_row("nf4", "ok")], ["nf4"], 1, bench=bench))
    at = next(i for i, ln in enumerate(lines) if ln.startswith("throughput"))
    assert "4 prompts x 32 new tokens" in lines[at]
    assert lines[at + 3].split() == ["nf4", "300.0", "40.0", "1.50x", "2.0", "900", "173",
                                     "10.30"]
    assert render(_part([], [], 0)) == []

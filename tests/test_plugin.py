"""The plugin end to end inside ``pytester``, on the real default model with 8-token answers.

Inner runs are subprocesses: each is a fresh interpreter, as a user's run would be.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import TWO_CONFIGS, ProjectMaker, workers_by_config

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def test_ids_read_config_then_case_and_k_selects_one_config(shrink_project: ProjectMaker) -> None:
    """``-k bf16`` keeps only bf16 items; drift is never parametrized with the reference."""
    p = shrink_project()
    result = p.runpytest_subprocess("suites", "--collect-only", "-q", "-k", "bf16")
    out = result.stdout.str()
    assert "suites/test_behaviour.py::test_drift[bf16-tiny.hello]" in out
    assert "test_constraint[bf16-tiny.capital-word_count1]" in out
    assert "[baseline-" not in out
    full = p.runpytest_subprocess("suites", "--collect-only", "-q").stdout.str()
    assert "test_drift[baseline-" not in full
    assert "test_degeneration[baseline-tiny.hello]" in full


def test_snapshot_update_flow(shrink_project: ProjectMaker) -> None:
    """Missing snapshot fails; --snapshot-update writes readable files; a changed header asks
    for regeneration instead of showing a diff."""
    p = shrink_project()
    first = p.runpytest_subprocess("suites", "-k", "snapshot")
    first.assert_outcomes(failed=2)
    update = p.runpytest_subprocess("suites", "-k", "snapshot", "--snapshot-update")
    update.assert_outcomes(passed=2)
    files = sorted((p.path / "snapshots" / "test_behaviour").glob("*.txt"))
    assert [f.name for f in files] == [
        "test_baseline_snapshot[tiny.capital].txt", "test_baseline_snapshot[tiny.hello].txt"]
    text = files[1].read_text()
    assert text.startswith("# shrinktests baseline snapshot, format 1\n# model: SmolLM2")
    assert "## prompt\nSay hello to Anna.\n" in text
    assert "max_new_tokens=8" in text
    p.runpytest_subprocess("suites", "-k", "snapshot").assert_outcomes(passed=2)

    files[1].write_text(text.replace("# model: SmolLM2", "# model: OtherModel"))
    changed = p.runpytest_subprocess("suites", "-k", "snapshot")
    changed.assert_outcomes(failed=1, passed=1)
    changed.stdout.fnmatch_lines([
        "*recorded under different settings*",
        "*recorded: model: OtherModel*",
        "*--snapshot-update*",
    ])


def test_generation_happens_once_per_config_and_suite(shrink_project: ProjectMaker) -> None:
    """Many checks read one generation: 2 configs x 1 suite = 2 generate calls; a warm run
    generates nothing and gives the same verdicts."""
    p = shrink_project()
    cold = p.runpytest_subprocess("suites", "--snapshot-update")
    cold.stdout.fnmatch_lines(["*generate calls this run: 2;*"])
    warm = p.runpytest_subprocess("suites")
    warm.stdout.fnmatch_lines(["*generate calls this run: 0;*"])
    # another thread count rounds differently: the cache must not answer for it (bf16 is
    # generated again; the baseline comes from the stored reference, which travels)
    other = p.runpytest_subprocess("suites", "--shrink-threads", "1")
    other.stdout.fnmatch_lines(["*numerics torch*, 1 thread*", "*generate calls this run: 1;*"])
    assert cold.parseoutcomes() == warm.parseoutcomes()
    assert warm.ret == 0


def test_drift_failure_message_shows_where_and_how_much(shrink_project: ProjectMaker) -> None:
    """An impossible budget fails with the prompt, the divergence and the figures."""
    p = shrink_project(TWO_CONFIGS.replace('"kl_mean <= 0.05"', '"kl_max <= 0.0"'))
    result = p.runpytest_subprocess("suites", "-k", "drift")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "*drift of config 'bf16' on tiny.hello exceeds its budget: kl_max <= 0 but got*",
        "*prompt: 'Say hello to Anna.'*",
        "*figures: first_divergence=*kl_mean=*top1=*",
    ])
    assert re.search(r"(first divergence at token \d+|no divergence)", result.stdout.str())


def test_drift_no_budget_bounds_is_skipped_with_the_reason(shrink_project: ProjectMaker) -> None:
    """A config with no drift budget (none of its own, none in [settings]) could never fail
    its drift tests: they say so instead of passing."""
    p = shrink_project(TWO_CONFIGS.replace('budgets = ["kl_mean <= 0.05"]\n', ""))
    result = p.runpytest_subprocess("suites", "-k", "drift", "-rs")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*no drift budget bounds config 'bf16'*[settings]*"])


def test_expect_breaks_is_a_strict_xfail(shrink_project: ProjectMaker) -> None:
    """A positive control marked expect = "breaks" is green while broken, red once it isn't."""
    broken = TWO_CONFIGS + """
[[config]]
name = "broken"
expect = "breaks"
method = "blockwise"
bits = 1
block_size = 64
budgets = ["kl_mean <= 0.5", "repetition <= 0.2"]
"""
    p = shrink_project(broken)
    result = p.runpytest_subprocess("suites", "-k", "broken and drift")
    result.assert_outcomes(xfailed=2)
    healthy = broken.replace('dtype = "bfloat16"', 'dtype = "bfloat16"\nexpect = "breaks"')
    p = shrink_project(healthy)
    result = p.runpytest_subprocess("suites", "-k", "bf16 and drift")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*XPASS(strict)*"])


@pytest.mark.parametrize(
    ("configs", "expected"),
    [
        (TWO_CONFIGS.replace('method = "dtype"\ndtype = "bfloat16"', 'method = "bnb-4bits"'),
         "config 'bf16', field 'method': unknown method 'bnb-4bits' (did you mean 'bnb-4bit'?)"),
        (TWO_CONFIGS.replace('"kl_mean <= 0.05"', '"kl_men <= 0.05"'),
         "config 'bf16', field 'budgets[0]': unknown metric 'kl_men'"),
        ("[[config]\nname = 1", "not valid TOML"),
    ],
    ids=["unknown-method", "unknown-metric", "bad-toml"],
)
def test_bad_configs_file_is_a_usage_error(shrink_project: ProjectMaker, configs: str,
                                           expected: str) -> None:
    """Exit code 4 (usage error) with the file, entry and field named, no traceback."""
    p = shrink_project(configs)
    result = p.runpytest_subprocess("suites")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert expected in err
    assert "configs.toml" in err
    assert "Traceback" not in err


def test_portable_numerics_pin_the_kernels_and_one_thread(shrink_project: ProjectMaker) -> None:
    """``--shrink-numerics portable`` pins torch, MKL and oneDNN to their AVX2 code before
    torch loads: the header says so, the cache does not answer for the native run, the
    verdicts are the same; another thread count is refused."""
    p = shrink_project()
    native = p.runpytest_subprocess("suites", "--snapshot-update")
    pinned = p.runpytest_subprocess("suites", "--shrink-numerics", "portable")
    pinned.stdout.fnmatch_lines(["*numerics torch*ATEN_CPU_CAPABILITY=avx2 "
                                 "MKL_CBWR=COMPATIBLE,STRICT*ONEDNN_MAX_CPU_ISA=AVX2, 1 thread*",
                                 "*generate calls this run: 1;*"])
    assert pinned.parseoutcomes() == native.parseoutcomes()
    refused = p.runpytest_subprocess("suites", "--shrink-numerics", "portable",
                                     "--shrink-threads", "3")
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    assert "runs at one thread, not --shrink-threads 3" in refused.stderr.str()


def test_unknown_threads_value_is_quoted(shrink_project: ProjectMaker) -> None:
    p = shrink_project()
    result = p.runpytest_subprocess("suites", "--shrink-threads", "zero")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "expected a positive integer, got 'zero'" in result.stderr.str()


def test_missing_model_folder_is_a_usage_error(shrink_project: ProjectMaker,
                                              tmp_path: Path) -> None:
    p = shrink_project()
    result = p.runpytest_subprocess("suites", "-k", "drift", "--shrink-model",
                                    str(tmp_path / "nope"))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"--shrink-model {tmp_path / 'nope'}: no such folder" in result.stderr.str()


def test_snapshot_mismatch_at_a_near_tie_is_reported_not_failed(
        shrink_project: ProjectMaker) -> None:
    """A recorded baseline that leaves this run's where the top-2 margin is under
    near_tie_epsilon is an xfail naming the near-tie; with epsilon 0 it is a failure."""
    p = shrink_project(TWO_CONFIGS.replace('reference = "baseline"',
                                           'reference = "baseline"\nnear_tie_epsilon = 0.999999'))
    p.runpytest_subprocess("suites", "-k", "snapshot and hello", "--snapshot-update")
    path = p.path / "snapshots" / "test_behaviour" / "test_baseline_snapshot[tiny.hello].txt"
    lines = path.read_text().splitlines()
    ids = lines[-1].split()
    ids[-1] = str(int(ids[-1]) + 1)  # the recorded run "chose" another last token
    path.write_text("\n".join([*lines[:-1], " ".join(ids)]) + "\n")
    tie = p.runpytest_subprocess("suites", "-k", "snapshot and hello", "-rx")
    tie.assert_outcomes(xfailed=1)
    tie.stdout.fnmatch_lines(["*differs from its snapshot from token 7*near-tie*"])
    shrink_project(TWO_CONFIGS)
    strict = p.runpytest_subprocess("suites", "-k", "snapshot and hello")
    strict.assert_outcomes(failed=1)


def test_shrink_model_takes_a_local_folder(shrink_project: ProjectMaker,
                                           model_cache: Path) -> None:
    """Any local HF causal LM folder works; here the converted default model's folder."""
    folder = next((model_cache / "models").glob("smollm2-135m-instruct-*"))
    p = shrink_project()
    result = p.runpytest_subprocess("suites", "-k", "bf16 and drift", "--shrink-model",
                                    str(folder))
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*model smollm2-135m-instruct-*@*generate calls this run: 2;*"])


def test_throughput_benchmarks_are_opt_in_and_carry_the_figures(
    shrink_project: ProjectMaker, tmp_path: Path
) -> None:
    """Skipped (with the way to enable them) in a plain run; with --benchmark-only each config
    times the fixed workload and its JSON record carries speed, memory and size."""
    import json

    configs = TWO_CONFIGS.replace(
        'budgets = ["repetition <= 0.9"]',
        'budgets = ["repetition <= 0.9"]\n'
        "benchmark = { prompts = 2, new_tokens = 4, rounds = 2, warmup_rounds = 1 }")
    p = shrink_project(configs)
    plain = p.runpytest_subprocess("suites", "-k", "throughput", "-rs")
    plain.assert_outcomes(skipped=2)
    plain.stdout.fnmatch_lines(["*throughput benchmarks are opt-in: --shrink-bench*"])

    out = tmp_path / "bench.json"
    run = p.runpytest_subprocess("suites", "--benchmark-only", f"--benchmark-json={out}")
    outcomes = run.parseoutcomes()
    assert outcomes["passed"] == 2, run.stdout.str()[-3000:]
    records = {b["extra_info"]["config"]: b for b in json.loads(out.read_text())["benchmarks"]}
    assert set(records) == {"baseline", "bf16"}
    for name, b in records.items():
        info = b["extra_info"]
        assert b["stats"]["rounds"] == 2
        assert info["generate_tps"] > 0 and info["prompt_eval_tps"] > 0
        assert info["peak_rss_mb"] > 100 and info["model_mb"] > 100
        assert info["bits_per_weight"] == (32.0 if name == "baseline" else 16.0)
    assert records["baseline"]["extra_info"]["vs_reference"] == 1.0
    run.stdout.fnmatch_lines(["*throughput (pytest-benchmark, fixed workload: 2 prompts x 4 new*",
                              "config*prompt tok/s*gen tok/s*peak RSS MB*"])
    assert records["bf16"]["extra_info"]["vs_reference"] > 0


def test_xdist_distributes_whole_configs_and_merges_one_summary(
    shrink_project: ProjectMaker,
) -> None:
    """``-n 2`` (dist switched to loadgroup) gives the single-process verdicts and one table
    with a row per config, built from both workers' data; each worker takes its share of
    the default threads (the single run is given the same count, so the numerics match); the
    workers' statuses reach the controller's output."""
    from shrinktests.run.options import default_threads

    share = default_threads(workers=2)
    p = shrink_project()
    single = p.runpytest_subprocess("suites", "--snapshot-update", f"--shrink-threads={share}")
    assert single.ret == 0, single.stdout.str()[-3000:]
    both = p.runpytest_subprocess("suites", "-n", "2", "-v")
    assert both.ret == 0, both.stdout.str()[-3000:]
    assert both.parseoutcomes() == single.parseoutcomes()
    out = both.stdout.str()
    suffix = "thread" if share == 1 else "threads"
    assert re.search(rf"numerics torch .*, {share} {suffix}\b", out), out[:2000]
    workers = workers_by_config(out)
    assert len(workers["baseline"]) == len(workers["bf16"]) == 1, workers
    assert workers["tiny.hello"] == workers["tiny.capital"] == workers["baseline"]
    table = out[out.index("shrinktests summary"):]
    assert re.search(r"^baseline\s", table, re.M) and re.search(r"^bf16\s", table, re.M)
    assert "over 2 workers" in table
    # workers have no terminal: the controller shows what each is doing (plain lines here)
    shown = set(re.findall(r"^\[shrinktests\] (baseline|bf16): ", out, re.M))
    assert shown, out[:3000]

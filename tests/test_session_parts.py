"""The parts behind ShrinkSession, each with a stub in place of the model: the replay of
accepted outputs (AcceptedState), a crash remembered per config (VariantPool), the choice of
a stored reference (StoredReferences)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shrinktests.accepted.record import AcceptedOutput, AcceptedRecord, prompt_key
from shrinktests.accepted.state import AcceptedState
from shrinktests.core.generation import Generation
from shrinktests.run.cache import DiskCache
from shrinktests.run.engine import DecodingSettings
from shrinktests.run.inputs import SessionOptions
from shrinktests.run.pool import VariantPool
from shrinktests.run.results import ConfigCrashed, ConfigRun
from shrinktests.run.stored import StoredReferences
from shrinktests.spec.files import ConfigSet, Suite, load_configs, load_suite

CONFIGS = """[settings]
reference = "base"
[[config]]
name = "base"
method = "dtype"
dtype = "float32"
[[config]]
name = "q"
method = "blockwise"
bits = 4
"""
SUITE = """[suite]
name = "tiny"
max_new_tokens = 8
[[prompt]]
id = "a"
text = "Say a."
[[prompt]]
id = "b"
text = "Say b."
"""


@dataclass
class StubSource:
    fingerprint: str = "model-fp"
    label: str = "stub"


class StubInputs:
    """What the parts read of RunInputs, without a model or tokenizer."""

    def __init__(self, options: SessionOptions) -> None:
        self.options = options
        self.configs: ConfigSet = options.configs
        self.source = StubSource()
        self.device = "cpu"

    def settings(self, suite: Suite) -> DecodingSettings:
        return DecodingSettings(max_new_tokens=suite.max_new_tokens,
                                chat_template=suite.chat_template)

    def record_fingerprint(self, name: str) -> str:
        return self.configs.get(name).fingerprint()

    def stats_key(self, name: str) -> str:
        return name


def _files(tmp_path: Path) -> tuple[ConfigSet, Suite]:
    (tmp_path / "configs.toml").write_text(CONFIGS)
    (tmp_path / "tiny.toml").write_text(SUITE)
    return load_configs(tmp_path / "configs.toml"), load_suite(tmp_path / "tiny.toml")


def _gen(ids: tuple[int, ...], margin: float = 0.5) -> Generation:
    p = np.log(np.array([[0.5 + margin / 2, 0.5 - margin / 2]] * len(ids), dtype=np.float32))
    return Generation(prompt_ids=(1, 2), token_ids=ids, text=f"live {ids}", finished=True,
                      top_ids=np.zeros((len(ids), 2), dtype=np.int64), top_logprobs=p)


def _options(tmp_path: Path, **kw: Any) -> SessionOptions:
    configs, suite = _files(tmp_path)
    return SessionOptions(model=None, configs=configs, suites=(suite,), cache_dir=None,
                          threads=1, snapshot_dir=tmp_path / "snapshots", **kw)


def _record(configs: ConfigSet, suite: Suite, fingerprint: str | None = None) -> AcceptedRecord:
    key = prompt_key((1, 2), DecodingSettings(max_new_tokens=8, chat_template=True).key())
    return AcceptedRecord(
        config="q", model="model-fp", model_label="stub",
        fingerprint=fingerprint or configs.get("q").fingerprint(),
        steps=tuple(configs.get("q").params()), margins_below=0.05, failures={"test_x": "why"},
        outputs={"tiny.a": AcceptedOutput(key, (5, 6, 7), "accepted a", True, {1: 0.01}),
                 "tiny.b": AcceptedOutput(key, (5, 6, 7), "accepted b", True, {})})


def test_accepted_state_replays_a_near_tie_and_keeps_a_real_change(tmp_path: Path) -> None:
    configs, suite = _files(tmp_path)
    assert suite.chat_template  # the key above assumes the default
    state = AcceptedState(StubInputs(_options(tmp_path)),  # type: ignore[arg-type]
                          {"q": _record(configs, suite)})
    live = [_gen((5, 9, 9), margin=0.5), _gen((5, 8, 8), margin=0.5)]
    judged = state.judge("q", suite, live)
    # a: the accepted output had a 0.01 margin at step 1, so the flip is this machine's
    assert judged[0].text == "accepted a" and state.replays["q"]["tiny.a"].kind == "machine"
    # b: left at a clear margin on both sides, a real change: this run's output is judged
    assert judged[1].text == "live (5, 8, 8)" and state.replays["q"]["tiny.b"].kind == "changed"
    assert state.failures("q") == {"test_x": "why"}


def test_accepted_state_does_not_apply_a_record_made_for_another_config(tmp_path: Path) -> None:
    configs, suite = _files(tmp_path)
    state = AcceptedState(StubInputs(_options(tmp_path)),  # type: ignore[arg-type]
                          {"q": _record(configs, suite, fingerprint="other")})
    assert state.record("q") is None and state.failures("q") == {}
    assert "recorded for another config" in state.stale_records["q"]
    judged = state.judge("q", suite, [_gen((5, 9)), _gen((5, 9))])
    assert [g.text for g in judged] == ["live (5, 9)"] * 2


def test_a_record_of_cpu_dependent_weights_made_on_another_cpu_is_judged_live(
        tmp_path: Path) -> None:
    """GPTQ's weights follow the CPU's float rounding: on another CPU the config is another
    model, so its outputs are judged live and its per-prompt checks are advisory."""
    from dataclasses import replace

    from shrinktests.pytest_plugin import expectations
    from shrinktests.run.portable import machine_key

    configs, suite = _files(tmp_path)
    here = _record(configs, suite)
    for cpu, foreign in ((None, False), (machine_key("cpu"), False),
                         ("x86_64 AVX2 avx2 fma", True)):
        state = AcceptedState(StubInputs(_options(tmp_path)),  # type: ignore[arg-type]
                              {"q": replace(here, cpu=cpu)})
        why = state.foreign_cpu("q")
        assert (why is not None) == foreign
        judged = state.judge("q", suite, [_gen((5, 9, 9)), _gen((5, 8, 8))])
        texts = [g.text for g in judged]
        assert texts[0] == ("live (5, 9, 9)" if foreign else "accepted a")
    assert why is not None and "made for x86_64 AVX2 avx2 fma" in why
    per_prompt = expectations.on_another_cpu("test_drift[q-tiny.a]", "q", {}, why, True)
    assert per_prompt is not None and not per_prompt.strict and "advisory" in per_prompt.reason
    # aggregates gate: a new aggregate failure fails; a recorded one is non-strict
    assert expectations.on_another_cpu("test_aggregate[q]", "q", {}, why, False) is None
    recorded = expectations.on_another_cpu("test_aggregate[q]", "q", {"test_aggregate[q]": ""},
                                           why, False)
    assert recorded is not None and not recorded.strict


def test_an_aggregate_regression_recorded_over_other_prompts_is_not_strict(
        tmp_path: Path) -> None:
    """A run of one suite aggregates fewer prompts than the record's run of all suites, so a
    recorded aggregate failure may pass within noise there: reported, not a strict XPASS."""
    from dataclasses import replace

    from shrinktests.pytest_plugin import expectations

    configs, suite = _files(tmp_path)
    same = _record(configs, suite)
    more = replace(same, outputs={**same.outputs, "other.c": same.outputs["tiny.a"]})
    failures = {"test_aggregate[q]": "aggregate over 3 prompts"}
    for record, scope in ((same, None), (more, "recorded over 3 prompts, this run aggregates 2")):
        state = AcceptedState(StubInputs(_options(tmp_path)),  # type: ignore[arg-type]
                              {"q": record})
        assert state.aggregate_scope("q") == scope
        x = expectations.accepted("test_aggregate[q]", "q", failures, "q.toml",
                                  state.aggregate_scope("q"))
        assert x is not None and x.strict == (scope is None)
        assert scope is None or scope in x.reason
    assert expectations.accepted("test_aggregate[q]", "q", {}, "q.toml", "other") is None
    assert AcceptedState(StubInputs(_options(tmp_path))).aggregate_scope("q") is None  # type: ignore[arg-type]


def test_a_new_record_holds_this_runs_outputs(tmp_path: Path) -> None:
    configs, _ = _files(tmp_path)
    state = AcceptedState(StubInputs(_options(tmp_path)))  # type: ignore[arg-type]
    record = state.new_record("q", 0.05, {"tiny": [_gen((3,), 0.01), _gen((4,))]})
    assert set(record.outputs) == {"tiny.a", "tiny.b"}
    assert record.outputs["tiny.a"].margins == {0: pytest.approx(0.01, abs=1e-6)}
    assert record.fingerprint == configs.get("q").fingerprint()


def test_a_crash_is_remembered_for_that_config_only(tmp_path: Path) -> None:
    runs: dict[str, ConfigRun] = {"q": ConfigRun()}
    pool = VariantPool(StubInputs(_options(tmp_path)), DiskCache(None), runs)  # type: ignore[arg-type]
    with pytest.raises(ConfigCrashed, match="config 'q' failed: ValueError: boom"), \
            pool.guard("q"):
        raise ValueError("boom")
    with pytest.raises(ConfigCrashed, match="boom"):  # later use fails at once, not rebuilt
        pool.get("q")
    assert runs["q"].error == "ValueError: boom"
    with pool.guard("base"):  # another config is untouched
        pass


def test_live_mode_never_reads_a_stored_reference(tmp_path: Path) -> None:
    _, suite = _files(tmp_path)
    stored = StoredReferences(StubInputs(_options(tmp_path, reference="live")))  # type: ignore[arg-type]
    assert stored.get(suite) is None
    auto = StoredReferences(StubInputs(_options(tmp_path)))  # type: ignore[arg-type]
    assert auto.get(suite) is None  # no file: the baseline runs live, and the note says why
    assert auto.notes["tiny"] == "live (no stored reference)"
    assert auto.path(suite) == tmp_path / "snapshots" / "reference" / "tiny.safetensors"


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc")
def test_freed_heap_memory_goes_back_to_the_system() -> None:
    """Blocks freed between blocks still alive stay in the C heap (resident) until trimmed:
    the way freed tensors piled up over a run of configs. After return_freed_memory they
    are given back."""
    from shrinktests.core.heap import _malloc_trim
    from shrinktests.run.resources import return_freed_memory

    if _malloc_trim() is None:
        pytest.skip("this C library has no malloc_trim")

    def rss_mb() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no RssAnon in /proc/self/status")

    return_freed_memory()
    before = rss_mb()
    big, keep = [], []
    for i in range(3000):  # 64 KB blocks (under glibc's mmap threshold), each pinned by a
        big.append(bytes([i % 251]) * 65536)  # small block after it
        keep.append(bytes([i % 251]) * 1024)
    grown = rss_mb()
    del big
    assert grown - before > 150
    return_freed_memory()
    assert rss_mb() - before < (grown - before) / 3
    assert len(keep) == 3000


def test_objects_made_after_the_freeze_are_still_collected() -> None:
    """Freezing what is alive before the first model loads takes it out of every later
    collection; a model-sized cycle made afterwards is still freed by return_freed_memory."""
    import gc
    import weakref

    from shrinktests.run.resources import freeze_imported_objects, return_freed_memory

    class Node:
        other: Node | None = None

    freeze_imported_objects()
    assert gc.get_freeze_count() > 0
    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle: only the collector can free it
    gone = weakref.ref(a)
    del a, b
    return_freed_memory()
    assert gone() is None

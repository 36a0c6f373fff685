"""Reliability without a model: atomic writes, no remote code, xdist keeping configs whole.

The xdist test runs a model-free project (a fake model folder, tests that only take the
``shrink_config`` and ``shrink_case`` fixtures), so it checks scheduling in seconds.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import shrinktests
from shrinktests.pytest_plugin.distribute import config_group
from shrinktests.run.cache import DiskCache, atomic_write_text, atomic_writer
from shrinktests.run.model import ModelSource, load_model, load_tokenizer
from tests.conftest import ProjectMaker, workers_by_config

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

# --------------------------------------------------------------------------- atomic writes


class Boom(Exception):
    pass


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_interrupted_text_write_keeps_the_old_file(tmp_path: Path) -> None:
    """A write that dies half way leaves the previous content and no temporary file."""
    path = tmp_path / "memo.txt"
    atomic_write_text(path, "old")
    with pytest.raises(Boom), atomic_writer(path) as f:
        f.write("new, half")
        f.flush()
        raise Boom
    assert path.read_text() == "old"
    assert _leftovers(tmp_path) == []
    atomic_write_text(path, "new")
    assert path.read_text() == "new"


class _Unpicklable:
    """Pickles to a few bytes, then fails: an interrupt in the middle of ``pickle.dump``."""

    def __reduce__(self) -> Any:
        raise Boom


def test_interrupted_cache_put_keeps_the_old_entry(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path)
    cache.put("generation", "ab12", ["first"])
    with pytest.raises(Boom):
        cache.put("generation", "ab12", ["x" * 10_000, _Unpicklable()])
    assert cache.get("generation", "ab12") == ["first"]
    assert _leftovers(tmp_path / "generation" / "ab") == []


def test_snapshot_writes_are_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """syrupy's own writer truncates the file first; ours goes through atomic_writer."""
    from syrupy.data import Snapshot, SnapshotCollection

    from shrinktests.pytest_plugin import snapshot

    path = tmp_path / "test_baseline_snapshot[tiny.hello].txt"
    collection = SnapshotCollection(location=str(path))
    collection.add(Snapshot(name="x", data="# header\nfirst\n"))
    snapshot.BaselineSnapshotExtension.write_snapshot_collection(snapshot_collection=collection)
    assert path.read_text() == "# header\nfirst\n"

    def fail(p: Path, text: str) -> None:
        with atomic_writer(p) as f:
            f.write(text[:3])
            raise Boom

    monkeypatch.setattr(snapshot, "atomic_write_text", fail)
    collection = SnapshotCollection(location=str(path))
    collection.add(Snapshot(name="x", data="# header\nsecond\n"))
    with pytest.raises(Boom):
        snapshot.BaselineSnapshotExtension.write_snapshot_collection(
            snapshot_collection=collection)
    assert path.read_text() == "# header\nfirst\n"
    assert _leftovers(tmp_path) == []


def test_no_direct_file_writes_in_the_package() -> None:
    """Every write goes through cache.atomic_writer: no open(..., "w"), write_text,
    write_bytes, json.dump, torch.save or save_file elsewhere in shrinktests/ (the GGUF
    conversion's and the export's save_pretrained write into a temporary folder that is
    renamed whole; the atlas's torch.save keeps a config's original weights in a temporary
    folder that is removed whole)."""
    root = Path(shrinktests.__file__).parent
    pattern = re.compile(r"""open\([^)]*["'][wax]b?["']|\.write_text\(|\.write_bytes\(|"""
                         r"""json\.dump\(|torch\.save\(|save_file\(|save_pretrained\(""")
    allowed = {("gguf_folder.py", "save_pretrained("), ("export.py", "save_pretrained("),
               ("resources.py", ".write_text("), ("atlas/measure.py", "torch.save("),
               ("cache.py", "open(fd, \"wb\" if binary else \"w\"")}
    found = []
    for path in sorted(root.rglob("*.py")):
        for m in pattern.finditer(path.read_text()):
            hit = m.group(0)
            where = path.relative_to(root).as_posix()
            if not any(name in (path.name, where) and hit.endswith(h) for name, h in allowed):
                found.append(f"{path.relative_to(root)}: {hit}")
    assert found == []


# --------------------------------------------------------------------------- remote code


def test_model_and_tokenizer_never_trust_remote_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even a caller (or a method's load_kwargs) asking for it gets trust_remote_code=False."""
    import transformers

    seen: list[dict[str, Any]] = []

    class FakeModel:
        def eval(self) -> FakeModel:
            return self

    class FakeTokenizer:
        pad_token_id = 0
        padding_side = "right"

    def record(result: Any) -> Any:
        def from_pretrained(*args: Any, **kwargs: Any) -> Any:
            seen.append(kwargs)
            return result
        return from_pretrained

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        record(FakeModel()))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", record(FakeTokenizer()))
    source = ModelSource(tmp_path, "fake", "0" * 16)
    load_model(source)
    load_model(source, trust_remote_code=True)
    load_tokenizer(source)
    assert [k["trust_remote_code"] for k in seen] == [False, False, False]


def test_every_from_pretrained_call_refuses_remote_code() -> None:
    """Static guard for new call sites: each ``from_pretrained(...)`` in the package passes
    ``trust_remote_code=False`` literally (load_model's ``**kwargs`` call forces it; the test
    above checks that one at run time)."""
    root = Path(shrinktests.__file__).parent
    bad = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "from_pretrained"):
                continue
            flag = next((k.value for k in node.keywords if k.arg == "trust_remote_code"), None)
            literal_false = isinstance(flag, ast.Constant) and flag.value is False
            forced = any(k.arg is None for k in node.keywords) and path.name == "model.py"
            if not (literal_false or forced):
                bad.append(f"{path.name}:{node.lineno}")
    assert bad == []


# --------------------------------------------------------------------------- xdist


def test_config_group_reads_the_config_from_the_node_id() -> None:
    configs = ["baseline", "fp4", "fp4-dq", "bf16"]
    cases = {"tiny.hello", "calibration.zurich-haiku"}

    def group(nodeid: str) -> str | None:
        return config_group(nodeid, configs, cases, "baseline")

    assert group("suites/t.py::test_drift[bf16-tiny.hello]") == "bf16"
    assert group("suites/t.py::test_drift[fp4-dq-tiny.hello]") == "fp4-dq"
    assert group("suites/t.py::test_drift[fp4-tiny.hello]") == "fp4"
    assert group("suites/t.py::test_constraint[fp4-calibration.zurich-haiku-regex1]") == "fp4"
    assert group("suites/t.py::test_throughput[fp4-dq]") == "fp4-dq"
    assert group("suites/t.py::test_baseline_snapshot[calibration.zurich-haiku]") == "baseline"
    assert group("suites/t.py::test_drift[bf16-tiny.hello]@bf16") == "bf16"
    assert group("suites/t.py::test_atlas[L03.mlp]") == "baseline"  # perturbs the reference
    assert group("suites/t.py::test_atlas_recipe") == "baseline"
    assert group("tests/test_other.py::test_x[1-2]") is None
    assert group("tests/test_other.py::test_x") is None


FAKE_CONFIGS = "".join(
    f'[[config]]\nname = "{name}"\nmethod = "dtype"\ndtype = "{dtype}"\n\n'
    for name, dtype in [("baseline", "float32"), ("bf16", "bfloat16"), ("fp16", "float16")])
FAKE_SUITE = '[suite]\nname = "tiny"\n' + "".join(
    f'\n[[prompt]]\nid = "{p}"\ntext = "{p}?"\n' for p in ("a", "b", "c", "d"))
FAKE_TESTS = textwrap.dedent("""
    def test_one(shrink_config, shrink_case):
        pass

    def test_two(shrink_config, shrink_case):
        pass

    def test_case_only(shrink_case):
        pass
""")


@pytest.fixture
def fake_project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A shrinktests project whose tests never load a model (a fake model folder)."""
    model = pytester.path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    (model / "model.safetensors").write_bytes(b"not weights")
    suites = pytester.path / "suites"
    suites.mkdir()
    (suites / "configs.toml").write_text(FAKE_CONFIGS)
    (suites / "tiny.toml").write_text(FAKE_SUITE)
    (suites / "test_fake.py").write_text(FAKE_TESTS)
    pytester.makeini(f"[pytest]\naddopts = --shrink-model={model} "
                     f"--shrink-cache={pytester.path / 'cache'} -p no:cacheprovider\n")
    return pytester


def test_xdist_keeps_each_config_on_one_worker(fake_project: pytest.Pytester) -> None:
    """``-n 2`` alone selects loadgroup, and each config's tests run on exactly one worker
    (both failed before: xdist's own -n default won the hook race, and its xdist_group
    marks stopped working with pytest 9.2's structured node ids)."""
    pytest.importorskip("xdist")
    result = fake_project.runpytest_subprocess("suites", "-n", "2", "-v")
    result.assert_outcomes(passed=3 * 4 * 2 + 4)
    out = result.stdout.str()
    assert "scheduling tests via ConfigScheduling" in out
    workers = workers_by_config(out)
    assert set(workers) == {"baseline", "bf16", "fp16", "tiny.a", "tiny.b", "tiny.c", "tiny.d"}
    for config in ("baseline", "bf16", "fp16"):
        assert len(workers[config]) == 1, (config, workers)
    # the config-less tests ride with the reference
    assert all(workers[f"tiny.{p}"] == workers["baseline"] for p in "abcd")
    assert set().union(*workers.values()) == {"gw0", "gw1"}


def test_an_explicit_dist_mode_is_kept(fake_project: pytest.Pytester) -> None:
    """A user who picks ``--dist load`` gets it (and each worker may build every model)."""
    pytest.importorskip("xdist")
    result = fake_project.runpytest_subprocess("suites", "-n", "2", "-v", "--dist", "load")
    result.assert_outcomes(passed=3 * 4 * 2 + 4)
    assert "scheduling tests via LoadScheduling" in result.stdout.str()


def test_outputs_are_deterministic_across_processes_and_subsets(
        shrink_project: ProjectMaker) -> None:
    """Recorded once, the baseline is reproduced by a fresh process without any cache, for a
    -k subset of one prompt, and live (the stored reference is not used to cheat)."""
    p = shrink_project()
    p.runpytest_subprocess("suites", "-k", "snapshot", "--snapshot-update").assert_outcomes(
        passed=2)
    first = sorted((p.path / "snapshots" / "test_behaviour").glob("*.txt"))
    before = [f.read_text() for f in first]
    again = p.runpytest_subprocess("suites", "-k", "snapshot and hello", "--shrink-cache=none",
                                   "--shrink-reference=live")
    again.assert_outcomes(passed=1)
    again.stdout.fnmatch_lines(["*generate calls this run: 1;*"])
    rerecord = p.runpytest_subprocess("suites", "-k", "snapshot", "--snapshot-update",
                                      "--shrink-cache=none")
    rerecord.assert_outcomes(passed=2)
    assert [f.read_text() for f in first] == before


def test_the_numerics_fingerprint_names_threads_versions_and_cpu_features() -> None:
    """What joins the cache keys of every forward pass: a change of thread count, package
    version or CPU kernels must miss the cache."""
    import torch

    from shrinktests.run.numerics import cpu_flags, describe, numerics

    assert numerics(1) != numerics(3)
    assert numerics(2)["torch"] == torch.__version__
    assert numerics(2)["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert cpu_flags("processor: 0\nflags\t\t: fpu sse avx2 amx_tile avx512f amx_bf16\n") == [
        "amx_bf16", "amx_tile", "avx2", "avx512f"]
    assert cpu_flags("no flags line") == []
    assert describe(3).endswith(", 3 threads") and describe(1).endswith(", 1 thread")


def test_a_kernel_cap_in_the_environment_joins_the_numerics(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """AMX capped off rounds bf16 like a CPU without AMX: a warm cache from an uncapped run
    must not stand in for it."""
    from shrinktests.run import numerics as n

    n._machine.cache_clear()
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    plain = n.numerics(2)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    n._machine.cache_clear()
    try:
        capped = n.numerics(2)
        assert capped != plain and "ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16" in n.describe(2)
    finally:
        n._machine.cache_clear()


@pytest.mark.parametrize(("cpus", "workers", "threads"), [
    (2, 1, 2), (2, 2, 1), (2, 3, 1), (8, 1, 4), (8, 2, 4), (8, 4, 2), (16, 8, 2), (1, 1, 1),
])
def test_the_default_thread_count_is_shared_among_xdist_workers(
        monkeypatch: pytest.MonkeyPatch, cpus: int, workers: int, threads: int) -> None:
    """The CPUs divided among the workers, at most 4 and at least 1 each: two workers at two threads
    each on two cores ran 2.7x slower than one process (oversubscribed cores wait)."""
    from shrinktests.spec import flags

    monkeypatch.setattr(flags.os, "cpu_count", lambda: cpus)
    assert flags.default_threads(workers) == threads


def _imports(tree: ast.AST) -> set[str]:
    """Modules a file imports: at import time, inside functions (they run too) and for the
    type checker only (``if TYPE_CHECKING:``: a type a module names is a dependency all the
    same)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


#: the package's layers, bottom first: a module imports from its own layer and the ones below
#: it only (the README's "Where things live" table follows this order)
LAYERS = (
    ("shrinktests", "core"),  # the version; the schema, the generation record, the heap
    ("compression", "judging"),  # methods; checks and statistics over generations
    ("spec",),  # suites and configs files, validated against the methods and checks
    ("run",),  # options, models, variants, the engine, the cache, the stored reference
    ("accepted",),  # each config's accepted record and its replay
    ("atlas",),  # the sensitivity atlas
    ("session",),  # the run as one object
    ("report",),  # the summary's data and its renderings
    ("pytest_plugin", "cli"),  # the two front ends
    ("suite_tests", "__main__"),  # what users' suites and ``python -m`` import
)


def _module_graph() -> dict[str, set[str]]:
    """Each of the package's modules and the package modules it imports, type-only counted."""
    package = Path(shrinktests.__file__).parent
    modules = {}
    for path in package.rglob("*.py"):
        name = ".".join(path.relative_to(package.parent).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    return {name: {d for d in _imports(ast.parse(path.read_text())) if d in modules
                   and d != name} for name, path in modules.items()}


def test_packages_import_only_the_layers_below_them() -> None:
    """The layer order is a test: a dependency that points up (the session built by the run
    layer, the input layer reading the atlas) fails here with the import that does it."""
    rank = {name: i for i, layer in enumerate(LAYERS) for name in layer}

    def layer(module: str) -> str:
        return module.split(".")[1] if "." in module else module

    graph = _module_graph()
    assert {layer(m) for m in graph} == set(rank), "place the new package in LAYERS"
    upward = sorted(f"{a} -> {b}" for a, deps in graph.items() for b in deps
                    if rank[layer(b)] > rank[layer(a)])
    assert upward == []


def test_no_import_cycles_in_the_package() -> None:
    """Every module depends on the ones below it only, type-only imports counted: the data
    flows one way, and the method registry imports its modules by name."""
    graph = _module_graph()

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            for dep in graph[todo.pop()] - seen:
                if dep == goal:
                    return True
                seen.add(dep)
                todo.append(dep)
        return False

    cycles = sorted(f"{a} <-> {b}" for a in graph for b in graph[a] if reaches(b, a))
    assert cycles == []


def test_importing_the_plugin_is_cheap() -> None:
    """pytest loads the plugin in every run of an environment where shrinktests is installed,
    also in projects that never use it: importing it loads a few of the package's own modules
    and nothing heavy (numpy, torch, transformers load once a model or a figure is needed)."""
    code = ("import sys, pytest; before = set(sys.modules); "
            "import shrinktests.pytest_plugin.plugin; "
            "print(' '.join(sorted(set(sys.modules) - before)))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(shrinktests.__file__).parent.parent)
    loaded = run.stdout.split()
    # nothing from outside the package (numpy, torch, transformers, ...), a dozen of its own
    assert [m for m in loaded if m.split(".")[0] != "shrinktests"] == []
    assert len(loaded) <= 12, loaded


def test_the_command_and_the_plugin_take_the_same_options(pytester: pytest.Pytester) -> None:
    """Each shared option is defined once: pytest's --shrink-NAME and the command's --NAME
    have the same help and refuse a bad value alike (the command once took --threads 0)."""
    from shrinktests.cli import _parser
    from shrinktests.spec import flags

    commands = _parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    atlas = {a.dest: a for a in commands["atlas"]._actions}
    plugin = pytester.runpytest_subprocess("--help")
    help_text = " ".join(plugin.stdout.str().split())
    for flag in flags.SHARED:
        assert atlas[flag.name].help == flag.help
        assert f"--shrink-{flag.name}={flag.metavar} " in help_text
        assert " ".join(flag.help.split()) in help_text.replace("%%", "%")
    with pytest.raises(SystemExit):
        _parser().parse_args(["atlas", "--threads", "0"])
    refused = pytester.runpytest_subprocess("--shrink-threads", "0")
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    assert "expected a positive integer, got '0'" in refused.stderr.str()

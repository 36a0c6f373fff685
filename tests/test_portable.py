"""Calibrated steps computed once under pinned numerics (shrinktests.run.portable)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import torch

from shrinktests.run import portable
from shrinktests.run.model import ModelSource
from shrinktests.run.variant import build_variant
from shrinktests.spec.files import load_configs
from tests.test_prune import tiny_llama

CONFIGS = """[settings]
reference = "base"
[[config]]
name = "base"
method = "dtype"
dtype = "float32"
[[config]]
name = "g"
steps = [{ method = "gptq", bits = 4, group_size = 32 }, { method = "eora", rank = 4 }]
[[config]]
name = "plain-svd"
steps = [
  { method = "blockwise", bits = 4 },
  { method = "eora", rank = 4, activation_aware = false },
]
[[config]]
name = "w8a8"
method = "torchao-int8"
activations = "dynamic"
[[config]]
name = "w8a16-in-a-recipe"
method = "mixed"
rules = [{ method = "torchao-int8", scope = { part = "mlp" } }]
"""
CALIBRATION = [[(7 * i + j) % 64 for j in range(12)] for i in range(6)]


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@pytest.fixture
def project(tmp_path: Path) -> tuple[ModelSource, Path]:
    folder = tmp_path / "tiny"
    tiny_llama(2).save_pretrained(folder)
    (tmp_path / "configs.toml").write_text(CONFIGS)
    return ModelSource(folder, "tiny", "tiny-fp"), tmp_path / "configs.toml"


def test_which_configs_are_pinned_and_what_their_records_hold_for(
        project: tuple[ModelSource, Path]) -> None:
    configs = load_configs(project[1])
    assert portable.weights_key(configs.get("base"), "cpu") is None
    assert portable.weights_key(configs.get("plain-svd"), "cpu") is None  # no calibration
    assert not portable.applies("cuda")
    # kernels that quantize activations: the record names the family of int8 kernels
    w8a8 = portable.weights_key(configs.get("w8a8"), "cpu")
    assert w8a8 == portable.kernels_key("cpu") and w8a8.endswith("int8 kernels")
    assert portable.weights_key(configs.get("w8a16-in-a-recipe"), "cpu") is None
    if portable.applies("cpu"):
        assert portable.weights_key(configs.get("g"), "cpu") == portable.PORTABLE_KEY


@pytest.mark.skipif(not portable.applies("cpu"), reason="pinned numerics need x86-64 with AVX2")
def test_the_child_ignores_the_callers_threads_and_kernels_and_the_run_takes_its_tensors(
        project: tuple[ModelSource, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The same tensors from a caller at three threads with AMX capped off and from one at
    one thread on the AVX2 path; a build with them holds exactly those weights and factors,
    and nothing is computed again once they are in the cache."""
    source, path = project
    config = load_configs(path).get("g")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
        said: list[str] = []
        first = portable.pinned_results(source, config, CALIBRATION, tmp_path / "cache",
                                        said.append)
        torch.set_num_threads(1)
        monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
        monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")
        again = portable.pinned_results(source, config, CALIBRATION, None)
    finally:
        torch.set_num_threads(threads)
    assert len(first) == 14 + 2 * 14  # 14 linear layers rounded, two factors each
    # the child's steps say how far they are, as they go (a silent minute on a big model)
    assert said == ["gptq: layer 1 of 2", "gptq: layer 2 of 2", "eora: layer 1 of 2",
                    "eora: layer 2 of 2"], said
    assert _digest(first) == _digest(again)
    assert len(list((tmp_path / "cache" / "portable").glob("*.safetensors"))) == 1

    built = build_variant(source, config, None, CALIBRATION, pinned=first)
    layer = built.model.model.layers[1].mlp.down_proj
    assert torch.equal(layer.base.weight, first["0.model.layers.1.mlp.down_proj.gptq"])
    assert torch.equal(layer.up.weight, first["1.model.layers.1.mlp.down_proj.eora.up"])
    assert built.stats.details["eora"]["activation_aware"]
    # another calibration is another key, so the cached tensors are never applied to it
    assert portable.results_key(source, config, CALIBRATION[:3]) != portable.results_key(
        source, config, CALIBRATION)



#: a parent that starts a child as the pinned run does, names it and is then killed; the child
#: stays silent (a big model's layer takes minutes), so only its parent's death can end it
PARENT = """
import os, signal, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import sys, time; "
                          "from shrinktests.run.portable import _die_with_parent; "
                          f"_die_with_parent({os.getpid()}); print('armed', flush=True); "
                          "time.sleep(60)"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         text=True)
assert child.stdout.readline() == "armed\\n"
print(child.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_the_child_ends_with_a_killed_parent() -> None:
    """A gate killed while its one-thread child computes leaves no child behind taking a
    core from whatever runs next (Linux: the child asks to be killed with its parent)."""
    import subprocess
    import sys
    import time

    import psutil

    if sys.platform != "linux":
        pytest.skip("a child ending with its parent is asked of Linux only")
    parent = subprocess.run([sys.executable, "-c", PARENT], cwd=Path(__file__).parent.parent,
                            capture_output=True, text=True, timeout=120)
    assert parent.returncode == -9, parent.stderr[-2000:]
    child = int(parent.stdout)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(child, psutil):
        time.sleep(0.1)
    assert not _alive(child, psutil), "the pinned child outlived its killed parent"


def _alive(pid: int, psutil: Any) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False

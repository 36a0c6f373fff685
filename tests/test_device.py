"""--shrink-device: a device that is not there is a usage error naming the option; on a
machine with CUDA, the suites run there (marked ``gpu``: skipped here with the reason)."""

from __future__ import annotations

import pytest
import torch  # at import time: pytester's tests restore sys.modules, and torch loads once

from tests.conftest import TWO_CONFIGS, ProjectMaker


def _cuda() -> bool:
    return bool(torch.cuda.is_available())


requires_cuda = pytest.mark.skipif(not _cuda(), reason="no CUDA device on this machine")


@pytest.mark.parametrize(("value", "message"), [
    ("tpu", "*--shrink-device must be auto, cpu, cuda or cuda:N, got 'tpu'*"),
    ("cuda:99", "*--shrink-device cuda:99: *"),
])
def test_a_device_that_is_not_there_is_a_usage_error(shrink_project: ProjectMaker, value: str,
                                                     message: str) -> None:
    run = shrink_project().runpytest_subprocess("suites", "--shrink-device", value)
    assert run.ret == pytest.ExitCode.USAGE_ERROR
    run.stderr.fnmatch_lines([message])


def test_cuda_without_cuda_names_the_option(shrink_project: ProjectMaker) -> None:
    if _cuda():
        pytest.skip("this machine has CUDA")
    run = shrink_project().runpytest_subprocess("suites", "--shrink-device", "cuda")
    assert run.ret == pytest.ExitCode.USAGE_ERROR
    run.stderr.fnmatch_lines(["*--shrink-device cuda: no CUDA device here*use cpu or auto*"])


def test_cpu_is_the_default_here_and_auto_says_so(shrink_project: ProjectMaker) -> None:
    if _cuda():
        pytest.skip("this machine has CUDA: auto picks it")
    run = shrink_project().runpytest_subprocess("suites", "-k", "drift and bf16")
    run.stdout.fnmatch_lines(["shrinktests: numerics torch *, cpu *"])
    run.assert_outcomes(passed=2)


@pytest.mark.gpu
@requires_cuda
def test_the_suites_run_on_cuda_with_bitsandbytes_kernels(shrink_project: ProjectMaker) -> None:
    configs = TWO_CONFIGS + '\n[[config]]\nname = "nf4"\nmethod = "bnb-4bit"\nquant_type = "nf4"\n'
    run = shrink_project(configs).runpytest_subprocess("suites", "--shrink-device", "cuda",
                                                       "-k", "not snapshot")
    run.stdout.fnmatch_lines(["shrinktests: numerics torch *, cuda (*"])
    run.stdout.fnmatch_lines(["nf4: *on cuda, peak device memory * MB*"])
    assert run.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED)
    assert "Error" not in run.stdout.str().split("shrinktests summary")[0]

"""Calibrated weights that come out the same on every x86-64 CPU with AVX2.

GPTQ and activation-aware low-rank correction read the calibration prompts' activations and
turn them into discrete decisions (a weight rounded up or down, a truncated SVD). Two CPUs
compute those activations through other kernels (AVX2, AVX-512, AMX) and thread counts, so
their last bits differ, some rounding decisions flip, and each flip feeds the next columns
and layers: measured on a 4-bit GPTQ config of SmolLM2-135M, the model calibrated on an AMX
CPU met 26 points fewer of the baseline's constraints, the one calibrated on an AMD AVX-512
CPU 16, though both ran the same code on the same prompts.

So the steps that do so (``Method.cpu_dependent``) run once in a child process whose numerics
are pinned before torch is imported: torch's AVX2 kernels, MKL in its conditional
numerical-reproducibility mode on its COMPATIBLE branch (``MKL_CBWR=COMPATIBLE,STRICT``),
oneDNN capped at AVX2, one thread. Every x86-64 CPU with AVX2 runs the same instructions in
the same order there, whatever CPU, thread count or ISA cap the run itself has. (MKL's AVX2
branch is not enough: MKL honours it on Intel CPUs only and silently runs its own code on
others, so the same GPTQ config rounded to other weights on an AMD EPYC than on an Intel
Xeon: tensors hashing 146c6ad0 against c5597b12.) The child saves what the steps
computed (GPTQ's rounded weights, the low-rank factors) under a key of the model, the config
and the calibration prompts, not of the machine; the run then builds the config as usual and
the steps take those tensors instead of computing them. Only this part is pinned: the
compressed model still *runs* on the machine's own kernels, which is what a user ships.

Elsewhere (another architecture, a GPU, a CPU without AVX2) the steps compute in place and
the config's accepted record names the machine it holds for (:func:`weights_key`).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shrinktests.compression.base import MethodUnavailable
from shrinktests.run.numerics import PORTABLE_ENV

if TYPE_CHECKING:
    import torch

    from shrinktests.run.model import ModelSource
    from shrinktests.spec.files import CompressionConfig

#: set before torch is imported in the child: the same kernels and reduction order on every
#: x86-64 CPU with AVX2 (the variables torch, MKL and oneDNN read to pick their code paths)
PINNED_ENV: dict[str, str] = {**PORTABLE_ENV, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
#: what an accepted record of such a config says it holds for (a record of the earlier pinned
#: numerics, MKL's AVX2 branch, names another machine, so it is advisory rather than replayed)
PORTABLE_KEY = "x86_64 portable (AVX2 kernels, MKL compatible branch, 1 thread)"
#: the packages whose code computes the pinned tensors (a new version may compute others)
_PACKAGES = ("torch", "transformers", "bitsandbytes", "gptqmodel", "numpy")
#: bumped when shrinktests' own computation of a pinned tensor changes (2: EoRA weighs the
#: error through a Cholesky factor of the input covariance instead of its eigenvectors)
CODE = 2
_UNAVAILABLE = 3  # the child's exit status for a step that cannot run here
_PROGRESS = "shrinktests-progress: "  # a line of the child's stdout the parent shows


def applies(device: str) -> bool:
    """Whether calibrated steps are computed under pinned numerics here: on the CPU of an
    x86-64 machine with AVX2 (the floor every pinned variable above asks for)."""
    from shrinktests.run.numerics import host_flags

    if device != "cpu" or platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    return "avx2" in host_flags()


def machine_key(device: str) -> str:
    """What calibrated weights computed here depend on: :data:`PORTABLE_KEY` under pinned
    numerics, else this machine's CPU (or GPU) as its float rounding sees it."""
    if applies(device):
        return PORTABLE_KEY
    from shrinktests.run.numerics import cpu_key

    return cpu_key() if device == "cpu" else f"{cpu_key()} on {device}"


def kernels_key(device: str) -> str:
    """The family of int8 kernels here: torch's CPU capability (AVX2, AVX512) or the GPU.

    Measured on the 7 configs most sensitive to the machine: a W8A8 model on torch's AVX2
    path read mean KL 0.051 where the AVX-512 and AMX CPUs read 0.030, and lost 3 per-prompt
    checks, a CPU with AMX against one with AVX-512 VNNI changed 1 to 4 outputs at clear
    margins and none of its verdicts."""
    from shrinktests.run.numerics import cpu_key

    family = " ".join(cpu_key().split()[:2])  # e.g. "x86_64 AVX512"
    return f"{family} int8 kernels" if device == "cpu" else f"{family} on {device}"


def weights_key(config: CompressionConfig, device: str) -> str | None:
    """What an accepted record of ``config`` says it holds for beyond its fingerprint: None
    when its outputs follow from the config alone, :func:`machine_key` when its weights are
    calibrated, :func:`kernels_key` when its kernels quantize activations."""
    if config.cpu_dependent:
        return machine_key(device)
    if config.quantizes_activations:
        return kernels_key(device)
    return None


def _versions() -> dict[str, str]:
    from shrinktests.run.numerics import _version

    return {p: _version(p) for p in _PACKAGES}


def results_key(source: ModelSource, config: CompressionConfig,
                calibration: Sequence[Sequence[int]]) -> str:
    """The pinned results' key: model, config, calibration prompts and package versions."""
    blob = json.dumps({"model": source.fingerprint, "config": config.fingerprint(),
                       "calibration": [list(map(int, ids)) for ids in calibration],
                       "packages": _versions(), "env": PINNED_ENV, "code": CODE},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def pinned_results(source: ModelSource, config: CompressionConfig,
                   calibration: Sequence[Sequence[int]], cache: Path | None,
                   progress: Callable[[str], None] = lambda text: None,
                   ) -> dict[str, torch.Tensor]:
    """The tensors the config's calibrated steps compute, computed under pinned numerics in a
    child process (or read from ``cache/portable/``, where the child leaves them). The child
    is silent for minutes on a big model but for what its steps report, handed to
    ``progress`` as it comes."""
    from safetensors.torch import load_file

    key = results_key(source, config, calibration)
    with tempfile.TemporaryDirectory(prefix="shrinktests-portable-") as scratch:
        folder = cache / "portable" if cache is not None else Path(scratch)
        path = folder / f"{key[:32]}.safetensors"
        if not path.exists():
            _compute(source, config, calibration, path, Path(scratch), progress)
        return dict(load_file(str(path)))


def _compute(source: ModelSource, config: CompressionConfig,
             calibration: Sequence[Sequence[int]], out: Path, scratch: Path,
             progress: Callable[[str], None]) -> None:
    from shrinktests.run.cache import atomic_writer

    job = scratch / "job.pkl"
    with atomic_writer(job, binary=True) as f:
        pickle.dump({"source": source, "config": config,
                     "calibration": [list(map(int, c)) for c in calibration], "out": out,
                     "parent": os.getpid()}, f)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
    said: list[str] = []
    with (scratch / "stderr.txt").open("w+") as err:
        child = subprocess.Popen([sys.executable, "-m", "shrinktests.run.portable",
                                  str(job)], env={**env, **PINNED_ENV}, stdout=subprocess.PIPE,
                                 stderr=err, text=True)
        assert child.stdout is not None
        try:
            for line in child.stdout:  # the steps' progress, as it comes; anything else is kept
                if line.startswith(_PROGRESS):
                    progress(line[len(_PROGRESS):].strip())
                else:
                    said.append(line)
            returncode = child.wait()
        finally:  # interrupted (Ctrl-C, a crash here): the child must not go on computing
            if child.poll() is None:
                child.kill()
                child.wait()
        err.seek(0)
        stderr = err.read()
    if returncode == _UNAVAILABLE:
        raise MethodUnavailable("".join(said).strip().splitlines()[-1])
    if returncode != 0:
        raise RuntimeError(f"config {config.name!r}: computing its calibrated steps under "
                           f"pinned numerics failed (exit {returncode}):\n{stderr[-3000:]}")


def _child(job_path: Path) -> int:
    """Build the config with every step recording what it computed; save that atomically."""
    import torch
    from safetensors.torch import save

    from shrinktests.run.cache import atomic_writer
    from shrinktests.run.variant import build_variant

    job: dict[str, Any] = pickle.loads(job_path.read_bytes())
    _die_with_parent(job["parent"])
    torch.set_num_threads(1)
    produced: dict[str, torch.Tensor] = {}
    def progress(text: str) -> None:
        print(_PROGRESS + text.replace("\n", " "), flush=True)

    try:
        build_variant(job["source"], job["config"], None, job["calibration"], "cpu",
                      produced=produced, progress=progress)
    except MethodUnavailable as exc:
        print(str(exc).replace("\n", " "))
        return _UNAVAILABLE
    blob = save({k: v.detach().contiguous().cpu() for k, v in produced.items()},
                metadata={"numerics": json.dumps(PINNED_ENV)})
    with atomic_writer(Path(job["out"]), binary=True) as f:
        f.write(blob)
    return 0


def _die_with_parent(parent: int) -> None:
    """Ask Linux to end this child when its parent ends. A one-thread child computing a big
    model's EoRA factors runs for tens of minutes; killed without it, a gate left it running
    and taking a core from whatever ran next."""
    if sys.platform != "linux":
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:  # the parent ended before the request was made
        os._exit(1)


if __name__ == "__main__":
    sys.exit(_child(Path(sys.argv[1])))

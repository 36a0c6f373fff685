"""What changes floating-point results besides the model, the config and the prompts.

Two CPUs of the same kind round differently when torch dispatches other kernels to them
(AVX2, AVX-512, AMX) or when the thread count changes the order of a reduction. Greedy text
from a compressed model branches at such a rounding difference, so a cached generation is only
valid for the numerics it was computed with: this fingerprint joins the cache keys of
generations, teacher-forced scores and atlas scopes, and a warm cache never hides a change of
machine. It does not join the stored reference or the accepted outputs, which are meant to
travel between machines.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
from pathlib import Path

#: packages whose kernels compute the numbers (a new version may round differently)
PACKAGES = ("torch", "transformers", "bitsandbytes", "torchao", "optimum-quanto", "accelerate",
            "gptqmodel", "gguf", "numpy")
#: environment variables that cap or pin the kernels torch, MKL and oneDNN pick (an AMX CPU
#: with ``ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16`` rounds bf16 like one without AMX)
KERNEL_ENV = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA")
#: the values that make every x86-64 CPU with AVX2 run the same kernels (read once, when torch
#: loads): torch's AVX2 code, oneDNN capped at AVX2, and MKL (torch's BLAS and LAPACK) in its
#: reproducible COMPATIBLE branch, the one branch MKL honours on AMD as on Intel CPUs: asked
#: for its AVX2 branch, an AMD EPYC silently ran its own code and rounded a 4-bit GPTQ model
#: into other weights than an Intel Xeon's (about 2.6x slower matrix products than AVX2)
PORTABLE_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE,STRICT",
                "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
#: CPU features that change which kernels run (oneDNN uses AMX and AVX-512 BF16/VNNI if present)
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx512_fp16",
             "amx_tile", "amx_bf16", "amx_int8")


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def cpu_flags(cpuinfo: str) -> list[str]:
    """The kernel-relevant flags listed in a ``/proc/cpuinfo`` text, sorted."""
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            present = set(line.partition(":")[2].split())
            return sorted(f for f in CPU_FLAGS if f in present)
    return []


@functools.cache
def host_flags() -> tuple[str, ...]:
    """The kernel-relevant flags of this machine's CPU (none where /proc/cpuinfo is absent)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ()
    return tuple(cpu_flags(text))


@functools.cache
def _machine() -> dict[str, str]:
    import torch

    flags = host_flags()
    pinned = " ".join(f"{k}={os.environ[k]}" for k in KERNEL_ENV if os.environ.get(k))
    return {
        "arch": platform.machine(),
        "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "cpu_flags": " ".join(flags),
        **({"kernel_env": pinned} if pinned else {}),
        **{p: _version(p) for p in PACKAGES},
    }


def cpu_key() -> str:
    """This CPU as its float rounding sees it: architecture, torch's kernel level and the
    kernel-relevant flags (e.g. ``x86_64 AVX512 avx2 avx512f fma``)."""
    m = _machine()
    return " ".join(p for p in (m["arch"], m["cpu_capability"], m["cpu_flags"]) if p)


def numerics(threads: int, device: str = "cpu") -> dict[str, str]:
    """Everything that changes the rounding of a forward pass on this machine (on a GPU,
    also its name: its kernels differ from the CPU's and from other GPUs')."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    out = {**_machine(), "threads": str(threads), "device": device}
    if device.startswith("cuda"):
        out["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return out


def describe(threads: int, device: str = "cpu") -> str:
    """One line for the report header, e.g. ``torch 2.13.0+cpu, cpu AVX512 (avx2 ...), 2
    threads``."""
    n = numerics(threads, device)
    flags = f" ({n['cpu_flags']})" if n["cpu_flags"] else ""
    gpu = f" ({n['gpu']})" if "gpu" in n else ""
    env = f", {n['kernel_env']}" if "kernel_env" in n else ""
    return (f"torch {n['torch']}, {n['device']}{gpu} {n['cpu_capability']}{flags}{env}, "
            f"{n['threads']} thread{'' if n['threads'] == '1' else 's'}")


def enter_portable() -> None:
    """Pin this process's kernels to :data:`PORTABLE_ENV` (``--shrink-numerics portable``).

    torch, MKL and oneDNN read these variables once, when torch is imported: too late
    afterwards, which is an error rather than a run that only looks portable."""
    import sys

    if "torch" in sys.modules:
        raise RuntimeError(
            "torch was imported before the numerics could be pinned; set them in the "
            "environment instead: " + " ".join(f"{k}={v}" for k, v in PORTABLE_ENV.items()))
    os.environ.update(PORTABLE_ENV)
    _machine.cache_clear()

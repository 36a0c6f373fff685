"""Run model-written Python in a separate, limited interpreter.

Constraint checkers such as ``handles_empty_input`` must *call* the function a model wrote.
That code is untrusted and often broken (an endless loop is a typical 2-bit failure), so it
never runs in the pytest process. It runs in a fresh ``python -I -S`` subprocess that, before
executing anything it was given:

- caps its CPU time, address space, file size and open files with ``resource`` limits;
- installs an audit hook (PEP 578) that refuses sockets, subprocesses, ``exec``/``fork``,
  ``ctypes``, file writes and deletions, so it has no network and cannot touch the disk;
- has an empty environment and an empty temporary working directory.

The parent also enforces a wall-clock timeout. This is a guard against accidents in generated
code, not a security boundary against an adversary who targets CPython itself.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import tempfile
from dataclasses import dataclass

_RUNNER = r"""
import io, json, resource, sys
payload = json.loads(sys.stdin.read())
nonce = payload["nonce"]
out = sys.__stdout__
cpu = int(payload["cpu_seconds"])
mem = int(payload["memory_mb"]) * 1024 * 1024
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
resource.setrlimit(resource.RLIMIT_NOFILE, (16, 16))
_BLOCKED = ("socket.", "subprocess.", "os.system", "os.exec", "os.fork", "os.forkpty",
            "os.spawn", "os.posix_spawn", "os.kill", "os.remove", "os.rename", "os.rmdir",
            "os.mkdir", "os.chmod", "os.symlink", "os.link", "os.truncate", "shutil.",
            "ctypes.", "pty.", "webbrowser.", "urllib.", "http.", "ftplib.", "smtplib.")
def _guard(event, args):
    if event.startswith(_BLOCKED):
        raise PermissionError(f"blocked in the sandbox: {event}")
    if event == "open" and (args[1] or "r") not in ("r", "rb", "rt", "br", "tr"):
        raise PermissionError(f"blocked in the sandbox: writing {args[0]!r}")
sys.addaudithook(_guard)
sys.stdout = sys.stderr = io.StringIO()
result = {"ok": False, "stage": "exec", "error": "", "value": "", "expected": ""}
try:
    namespace = {"__name__": "__sandbox__"}
    exec(compile(payload["code"], "<model output>", "exec"), namespace)
    result["stage"] = "call"
    value = eval(payload["call"], namespace)
    result["value"] = repr(value)[:200]
    if payload["expect"] is None:
        result["ok"] = True
    else:
        expected = eval(payload["expect"], {})
        result["expected"] = repr(expected)[:200]
        result["ok"] = value == expected
except BaseException as exc:  # noqa: BLE001 - everything the model's code raises is a result
    result["error"] = f"{type(exc).__name__}: {exc}"[:300]
out.write(nonce + json.dumps(result) + "\n")
out.flush()
"""


@dataclass(frozen=True)
class SandboxResult:
    """What happened when ``call`` was evaluated after executing the model's code."""

    ok: bool  # ran, and equalled ``expect`` when one was given
    detail: str  # one line for a failure message


def run_python(code: str, call: str, expect: str | None = None, *, timeout: float = 5.0,
               memory_mb: int = 512) -> SandboxResult:
    """Execute ``code``, then evaluate the expression ``call`` (and compare with ``expect``).

    ``call`` and ``expect`` come from the suite file (trusted); ``code`` from the model.
    """
    nonce = f"@@shrinktests-{secrets.token_hex(8)}@@"
    payload = json.dumps({"nonce": nonce, "code": code, "call": call, "expect": expect,
                          "cpu_seconds": max(1, int(timeout)), "memory_mb": memory_mb})
    with tempfile.TemporaryDirectory(prefix="shrinktests-sandbox-") as cwd:
        try:
            proc = subprocess.run(
                [sys.executable, "-I", "-S", "-c", _RUNNER], input=payload, cwd=cwd, env={},
                capture_output=True, text=True, timeout=timeout + 2, check=False,
            )
        except subprocess.TimeoutExpired:
            return SandboxResult(False, f"{call} did not finish within {timeout:g} s")
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(nonce)), None)
    if line is None:
        why = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else (
            f"exit status {proc.returncode}")
        if proc.returncode in (-9, -24):  # SIGKILL / SIGXCPU from the CPU-time limit
            return SandboxResult(False, f"{call} exceeded the {timeout:g} s CPU-time limit")
        return SandboxResult(False, f"{call} crashed the interpreter: {why}")
    r = json.loads(line[len(nonce):])
    if r["error"]:
        where = "the code" if r["stage"] == "exec" else call
        return SandboxResult(False, f"{where} raised {r['error']}")
    if not r["ok"]:
        return SandboxResult(False, f"{call} returned {r['value']}, expected {r['expected']}")
    return SandboxResult(True, f"{call} returned {r['value']}")

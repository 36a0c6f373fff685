"""GPTQ (``method = "gptq"``): Hessian-based error compensation, column by column, through the
maintained ``gptqmodel`` library.

``gptqmodel``'s :class:`GPTQ` quantizes one linear layer from the Hessian ``XᵀX`` of its inputs:
each column is rounded to the group's grid and its error is spread over the columns not yet
rounded, weighted by the inverse Hessian, so the layer's *outputs* on the calibration inputs
move as little as possible. This module is the driver around it, the part a library pipeline
would otherwise own: it runs on the model already loaded (after a pruning step, as one rule of
a ``mixed`` config, before a low-rank correction), on exactly the layers of a scope.

The driver is sequential, as GPTQ is: decoder layer *i* is calibrated on the outputs of layers
``< i`` *as already quantized*, and inside a layer the modules that read the same input
(q/k/v, then o, then gate/up, then down) are quantized group by group, each group seeing the
outputs of the groups before it. Weights are written back dequantized (the model still runs in
float); bits per weight count the GPTQ checkpoint layout: packed codes and zero points, a
float16 scale per group and output row, and the int32 column-to-group index.

Reproducibility. The solver's float32 Hessian sums and Cholesky factor depend on the thread
count, and each rounding decision feeds the next columns: one weight flipped near a grid
boundary spreads along its row and through every later layer. At one thread instead of two,
a quarter of the 4-bit model's greedy answers changed at clear margins. So the whole pass
(calibration forwards, Hessians, solver) runs on one thread, whatever ``--shrink-threads``
says: the result is bitwise the same at every thread count. Another CPU's kernels (AVX2,
AVX-512, AMX) still round the forward passes differently, and no arithmetic makes a
discontinuous function of them exact: on x86-64 the pass runs in a child process with pinned
numerics instead (:mod:`shrinktests.run.portable`), so every such CPU gets the same
weights; elsewhere (``cpu_dependent``) the config's accepted record names the machine.

Calibration: the selected suites' prompts by default (they then join the cache key), or
``calibration = "file.txt"`` (one sample per paragraph, or per line when the file has no blank
line), of which ``samples = N`` keeps the first N.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import math
import re
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from shrinktests.compression.base import MethodUnavailable, ScopedMethod
from shrinktests.compression.layerwise import (
    Stop,
    capture_layer_inputs,
    full_passes,
    layer_list,
    layer_runner,
    split_by_layer,
)
from shrinktests.compression.registry import register
from shrinktests.compression.scope import Scope
from shrinktests.core.schema import ConfigError

if TYPE_CHECKING:
    import torch

    from shrinktests.compression.context import StepContext

PIP = "pip install gptqmodel==7.6.0"


def read_samples(path: Path, samples: int | None) -> list[str]:
    """Calibration texts of a file: paragraphs (blank-line separated) when it has any blank
    line, else lines; empty ones dropped; the first ``samples`` of them."""
    text = path.read_text(encoding="utf-8")
    parts = re.split(r"\n\s*\n", text) if re.search(r"\n\s*\n", text.strip()) else text.split("\n")
    found = [p.strip() for p in parts if p.strip()]
    return found[:samples] if samples is not None else found


def packed_bytes(rows: int, columns: int, bits: int, group_size: int) -> int:
    """Bytes of one layer in the GPTQ checkpoint layout (``qweight``, ``qzeros``, ``scales``,
    ``g_idx``) for ``rows`` outputs × ``columns`` inputs."""
    groups = 1 if group_size == -1 else math.ceil(columns / group_size)
    codes = math.ceil(rows * columns * bits / 8)
    zeros = math.ceil(groups * rows * bits / 8)
    return codes + zeros + 2 * groups * rows + 4 * columns


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """gptqmodel prints a banner and its environment on import; keep the test output clean."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """torch on one thread inside the block: the solver's sums in one order everywhere."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _import_gptq() -> tuple[Any, Any]:
    """gptqmodel's solver and config classes, imported on a thread of their own.

    Importing gptqmodel leaves the frames that imported it alive, and a frame keeps its
    callers' (``f_back``) and their locals: imported from inside a compression, it held the
    model being compressed for the rest of the run (0.5 GB of a run's resident memory). The
    frames it keeps are now that short thread's, which hold nothing.
    """
    if "gptqmodel.quantization.gptq" not in sys.modules:
        failure: list[BaseException] = []

        def load() -> None:
            try:
                with _quiet():
                    import gptqmodel.quantization.gptq  # noqa: F401
            except BaseException as exc:  # raised again on the caller's thread
                failure.append(exc)

        thread = threading.Thread(target=load, name="import gptqmodel")
        thread.start()
        thread.join()
        if failure:
            exc = failure[0]
            if isinstance(exc, ImportError):  # installed, but something it needs is not
                raise MethodUnavailable(f"method 'gptq': gptqmodel failed to import ({exc}): "
                                        f"{PIP}") from exc
            raise exc
    from gptqmodel import QuantizeConfig
    from gptqmodel.quantization.gptq import GPTQ

    return GPTQ, QuantizeConfig


@register
@dataclass(frozen=True)
class Gptq(ScopedMethod):
    """GPTQ ``bits``-bit weights in groups of ``group_size`` input columns (-1: one group per
    row), symmetric or with zero points (``sym``), optionally in order of decreasing
    activation (``desc_act``), with ``damp`` × the mean Hessian diagonal added for stability."""

    name: ClassVar[str] = "gptq"
    cpu_dependent: ClassVar[bool] = True
    requires: ClassVar[tuple[str, ...]] = ("gptqmodel",)
    pip_hint: ClassVar[str] = PIP
    bits: int = 4
    group_size: int = 128
    sym: bool = True
    desc_act: bool = False
    damp: float = 0.01
    #: a text file of calibration samples (relative to the configs file); default: the suites'
    calibration: str | None = None
    #: keep only the first N calibration samples
    samples: int | None = None
    scope: Scope = field(default_factory=Scope)
    #: ``calibration`` resolved against the configs file, and its content's hash (set once by
    #: :meth:`with_base`, so the fingerprint does not re-read the file)
    calibration_path: Path | None = field(default=None, init=False, compare=False, repr=False)
    calibration_sha256: str | None = field(default=None, init=False, compare=False,
                                           repr=False)

    def __post_init__(self) -> None:
        if self.bits not in (2, 3, 4, 8):
            raise ConfigError("bits", f"GPTQ packs 2, 3, 4 or 8 bits, got {self.bits!r}")
        if self.group_size != -1 and self.group_size < 1:
            raise ConfigError("group_size", f"must be -1 (one group per row) or >= 1, "
                              f"got {self.group_size!r}")
        if not 0 < self.damp < 1:
            raise ConfigError("damp", f"must be in (0, 1), got {self.damp!r}")
        if self.samples is not None and self.samples < 1:
            raise ConfigError("samples", f"must be >= 1, got {self.samples!r}")

    def with_base(self, folder: Path) -> Gptq:
        if self.calibration is None:
            return self
        path = (folder / self.calibration).expanduser().resolve()
        if not path.is_file():
            raise ConfigError("calibration", f"{path}: no such file (a text file, one sample "
                              "per line or per paragraph, relative to the configs file)")
        try:
            found = read_samples(path, self.samples)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError("calibration", f"{path}: cannot be read as UTF-8 text ({exc})"
                              ) from None
        if not found:
            raise ConfigError("calibration", f"{path}: holds no sample (no non-empty line)")
        resolved = dataclasses.replace(self)
        object.__setattr__(resolved, "calibration_path", path)
        object.__setattr__(resolved, "calibration_sha256",
                           hashlib.sha256(path.read_bytes()).hexdigest()[:16])
        return resolved

    def uses_calibration(self) -> bool:
        return self.calibration is None  # a file's samples are in params() by their hash

    def params(self) -> dict[str, Any]:
        out = super().params()
        out.pop("calibration_path", None)  # machine-specific; the content hash stands for it
        if out.get("calibration_sha256") is None:
            out.pop("calibration_sha256", None)
        return out

    def calibration_ids(self, ctx: StepContext) -> list[torch.Tensor]:
        import torch

        if self.calibration is None:
            ids = list(ctx.calibration)
            return ids[: self.samples] if self.samples is not None else ids
        if self.calibration_path is None:
            raise ConfigError("calibration", "was not resolved against the configs file")
        if ctx.tokenize is None:
            raise MethodUnavailable("gptq: no tokenizer to read the calibration file with")
        return [torch.tensor(ctx.tokenize(text), dtype=torch.long, device=ctx.device)
                for text in read_samples(self.calibration_path, self.samples)]

    def apply_to(
        self, model: torch.nn.Module, modules: list[tuple[str, torch.nn.Linear]], ctx: StepContext
    ) -> torch.nn.Module:
        calibration = self.calibration_ids(ctx)
        if not calibration:
            raise ConfigError("calibration", "GPTQ needs calibration prompts: select a suite "
                              "or give calibration = \"file.txt\"")
        pinned = ctx.take_pinned([f"{name}.gptq" for name, _ in modules])
        if pinned is not None:  # rounded once under pinned numerics (run.portable)
            for (_, module), weight in zip(modules, pinned, strict=True):
                module.weight.data = weight.to(module.weight.device, module.weight.dtype)
        else:
            self._quantize(model, modules, calibration, ctx.progress)
        for name, module in modules:
            ctx.produce(f"{name}.gptq", module.weight.data)
            rows, columns = module.weight.shape
            ctx.packed_bytes[f"{name}.weight"] = packed_bytes(rows, columns, self.bits,
                                                              self.group_size)
        details: dict[str, Any] = ctx.stats.setdefault("gptq", {"tensors": 0})
        details["tensors"] += len(modules)
        details["samples"] = len(calibration)
        details["tokens"] = int(sum(ids.numel() for ids in calibration))
        return model

    def _quantize(self, model: torch.nn.Module, modules: list[tuple[str, torch.nn.Linear]],
                  calibration: list[torch.Tensor], progress: Callable[[str], None]) -> None:
        """Round ``modules`` on this machine with gptqmodel's solver, in data-flow order."""
        gptq_cls, config_cls = _import_gptq()

        def make_task(module: torch.nn.Module) -> Any:
            with _quiet():  # no disk offload: the layer is small and already in memory
                qcfg = config_cls(bits=self.bits, group_size=self.group_size, sym=self.sym,
                                  desc_act=self.desc_act, damp_percent=self.damp,
                                  offload_to_disk=False)
                task = gptq_cls(module, qcfg)
            task.quantizer.configure(perchannel=True)
            return task

        def finish(task: Any) -> dict[str, float]:
            with _quiet():
                *_, avg_loss, damp = task.hf_quantize(
                    blocksize=128, percdamp=self.damp, group_size=self.group_size,
                    actorder=self.desc_act)
            # gptqmodel computes in inference mode; a plain copy keeps the model usable
            # wherever autograd is on (an inference tensor cannot be saved for backward)
            task.module.weight.data = task.module.weight.data.clone()
            return {"loss": float(avg_loss), "damp": float(damp)}

        with one_thread():  # the whole pass: sums and kernels in one order at any --shrink-threads
            run_sequential(model, modules, calibration, make_task, finish, progress)


# --------------------------------------------------------------------------- the driver


def run_sequential(
    model: torch.nn.Module, modules: Sequence[tuple[str, torch.nn.Module]],
    calibration: Sequence[torch.Tensor], make_task: Any, finish: Any,
    progress: Callable[[str], None] = lambda text: None,
) -> dict[str, dict[str, float]]:
    """Quantize ``modules`` in data-flow order: ``make_task(module)`` gets the calibration
    inputs of its module through ``task.add_batch(inputs, outputs)``, then ``finish(task)``
    rounds the weights and returns its figures.

    Decoder layers are run one at a time on the hidden states the (already quantized) layers
    below produced; modules outside decoder layers (an LM head) are calibrated last, on a full
    forward pass. Returns ``finish``'s figures per module name; ``progress`` hears "gptq:
    layer i of n" as each decoder layer starts.
    """
    by_layer, rest = split_by_layer(modules)
    results: dict[str, dict[str, float]] = {}
    steps = len(by_layer) + bool(rest)
    if by_layer:
        container = next(iter(by_layer))[0]
        layers = layer_list(model, container)
        first = min(i for _, i in by_layer)
        hidden, kwargs = capture_layer_inputs(model, layers, first, calibration)
        for i in range(first, 1 + max(i for _, i in by_layer)):
            layer = layers[i]
            run = layer_runner(layer, hidden, kwargs[i])
            pending = by_layer.get((container, i), [])
            if pending:
                progress(f"gptq: layer {sum(1 for k in by_layer if k[1] <= i)} of {steps}")
            while pending:
                group = _next_group(pending, run)
                results.update(_quantize_group(group, run, make_task, finish))
                pending = [(n, m) for n, m in pending if n not in dict(group)]
            hidden = run()
    if rest:
        progress(f"gptq: {', '.join(n for n, _ in rest)} ({steps} of {steps})")
        run_full = full_passes(model, calibration)
        for one in rest:
            results.update(_quantize_group([one], run_full, make_task, finish))
    return results


def _next_group(pending: list[tuple[str, torch.nn.Module]], run: Any
                ) -> list[tuple[str, torch.nn.Module]]:
    """The pending modules called first in the layer's forward, with those that read the very
    same input tensor (q/k/v; gate/up): one pass on the first sample tells. The inputs are
    held until compared, so a freed tensor's memory reused by a later one cannot pass for it."""

    calls: list[tuple[str, torch.Tensor]] = []

    def hook(name: str) -> Any:
        def record(_m: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            calls.append((name, args[0]))
            if len(calls) == len(pending):
                raise Stop
        return record

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in pending]
    try:
        run(limit=1)
    finally:
        for h in handles:
            h.remove()
    if not calls:  # not reached by a forward pass: quantize them one by one
        return pending[:1]
    first = calls[0][1]
    names = {n for n, t in calls
             if t.data_ptr() == first.data_ptr() and t.shape == first.shape}
    return [(n, m) for n, m in pending if n in names]


def _quantize_group(group: list[tuple[str, torch.nn.Module]], run: Any, make_task: Any,
                    finish: Any) -> dict[str, dict[str, float]]:
    """One calibration pass feeding every module of ``group``, then each is rounded."""

    tasks = {name: make_task(module) for name, module in group}
    seen: set[str] = set()

    def hook(name: str) -> Any:
        def add(_m: torch.nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            tasks[name].add_batch(args[0].detach(), out.detach())
            seen.add(name)
            if len(seen) == len(tasks):  # this sample gave every module its input
                seen.clear()
                raise Stop
        return add

    handles = [module.register_forward_hook(hook(name)) for name, module in group]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return {name: finish(task) for name, task in tasks.items()}

"""The abstract base of every compression method (the registry is in ``registry.py``).

A method is a frozen dataclass: its fields *are* its parameters, so the configs file is
validated against the field types (unknown keys name the nearest known one, see
:mod:`shrinktests.core.schema`) and the canonical parameters feed the config fingerprint. A method
may contribute ``from_pretrained`` keyword arguments (load-time quantizers such as
bitsandbytes) and/or transform a loaded model in place.

A leaf module: it imports no method, so every method module can import it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from shrinktests.core.schema import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

    import torch

    from shrinktests.compression.context import StepContext
    from shrinktests.compression.scope import Scope


class MethodUnavailable(RuntimeError):
    """The method cannot run here (missing package, no suitable device): skip, don't crash."""


@dataclass(frozen=True)
class TensorError:
    """Reconstruction error of one tensor the method changed."""

    mse: float
    max_abs: float
    rel_fro: float


class Method(ABC):
    """A compression step. Subclasses are frozen dataclasses registered with :func:`register`."""

    name: ClassVar[str]
    #: import names that must be importable, and the pip line that provides them
    requires: ClassVar[tuple[str, ...]] = ()
    pip_hint: ClassVar[str] = ""
    #: its weights depend on forward passes computed here (calibration activations) through
    #: discontinuous rounding decisions, so another CPU's float rounding gives another model
    cpu_dependent: ClassVar[bool] = False

    def check_environment(self) -> None:
        """Raise :class:`MethodUnavailable` with the install line if a dependency is missing."""
        missing = [m for m in self.requires if not _importable(m)]
        if missing:
            raise MethodUnavailable(
                f"method {self.name!r} needs {', '.join(missing)}: {self.pip_hint}".rstrip(": ")
            )

    def load_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``from_pretrained`` (only load-time quantizers return any)."""
        return {}

    def apply(self, model: torch.nn.Module, ctx: StepContext) -> torch.nn.Module:
        """Transform a loaded model; put method-specific figures in ``ctx.stats``. Default: no-op
        (load-time quantizers do their work in ``from_pretrained``)."""
        return model

    def with_base(self, folder: Path) -> Method:
        """This method with the paths among its parameters (a calibration file) resolved
        against ``folder``, the configs file's; a missing file is a :class:`ConfigError`."""
        return self

    def depends_on_cpu(self) -> bool:
        """Whether this step's result differs between CPUs beyond near-ties (see
        :attr:`cpu_dependent`)."""
        return self.cpu_dependent

    def quantizes_activations(self) -> bool:
        """Whether its kernels round activations to integers on every forward pass: another
        family of int8 kernels (AVX2 against AVX-512 VNNI or AMX) then computes another model,
        not the recorded one at a near-tie (see :func:`shrinktests.run.portable.
        weights_key`)."""
        return False

    def uses_calibration(self) -> bool:
        """Whether the result depends on the calibration prompts (then they join the cache key)."""
        return False

    def params(self) -> dict[str, Any]:
        """Canonical, JSON-able parameters (for fingerprints and reports)."""
        return {"method": self.name, **_jsonable(dataclasses.asdict(self))}  # type: ignore[call-overload]


class ScopedMethod(Method):
    """A method that works layer by layer on the linear modules of a :class:`Scope`.

    Subclasses declare a ``scope`` field and implement :meth:`apply_to`; a mixed-precision rule
    hands :meth:`apply_to` only the modules no earlier rule took.
    """

    if TYPE_CHECKING:  # a dataclass field of each subclass; not evaluated at run time
        scope: Scope
    #: whether it rewrites float weights (it then cannot follow a quantizer on the same layer)
    rewrites_weights: ClassVar[bool] = True

    def apply(self, model: torch.nn.Module, ctx: StepContext) -> torch.nn.Module:
        modules = list(self.scope.linear_modules(model))
        if not modules:
            raise ConfigError("scope", "matches no linear layer of this model")
        self.check_float(modules)
        return self.apply_to(model, modules, ctx)

    def check_float(self, modules: list[tuple[str, torch.nn.Linear]]) -> None:
        """Refuse weights an earlier step already quantized: rounding or pruning packed codes
        would silently measure nonsense."""
        import torch

        if not self.rewrites_weights:
            return
        for name, module in modules:
            w = module.weight
            if type(w) not in (torch.nn.Parameter, torch.Tensor) or not w.is_floating_point():
                raise ConfigError(
                    "method", f"{self.name!r} rewrites float weights, but {name} is already "
                    f"quantized ({type(w).__name__}); put it before the quantizer")

    @abstractmethod
    def apply_to(
        self, model: torch.nn.Module, modules: list[tuple[str, torch.nn.Linear]], ctx: StepContext
    ) -> torch.nn.Module:
        """Compress exactly ``modules`` (name, module) of ``model``."""


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a dotted name whose parent package is missing
        return False


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value

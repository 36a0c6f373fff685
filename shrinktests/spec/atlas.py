"""``[settings.atlas]`` of a configs file: what the sensitivity atlas perturbs, with what, and
the per-scope budgets it judges (the atlas itself runs in :mod:`shrinktests.atlas`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from shrinktests.compression.base import ScopedMethod
from shrinktests.compression.blockwise import BlockwiseQuant
from shrinktests.compression.scope import ATTENTION, MLP, Scope
from shrinktests.core.schema import ConfigError

PARTS = ("attention", "mlp")
FAMILIES = ATTENTION + MLP
#: drift metrics a scope's budget may bound
BUDGET_METRICS = ("kl_mean", "kl_max", "top1", "first_divergence")


@dataclass(frozen=True)
class AtlasSettings:
    """``[settings.atlas]`` of the configs file: what to perturb, with what, and the budgets."""

    #: the perturbation applied to one scope at a time (default: blockwise 2-bit, block 32)
    method: ScopedMethod = field(default_factory=BlockwiseQuant)
    #: sub-blocks ("attention", "mlp") and/or tensor families ("q_proj", "down_proj", ...)
    parts: tuple[str, ...] = PARTS
    #: suites whose baseline continuations are scored (empty: every suite of the run)
    suites: tuple[str, ...] = ()
    #: per-scope budgets on kl_mean, kl_max, top1, first_divergence
    budgets: tuple[str, ...] = ()
    #: the recipe keeps the most sensitive scopes at ``high_bits`` and must fit the bits per
    #: weight of the uniform ``uniform_bits`` config it is compared with
    high_bits: int = 4
    uniform_bits: int = 3
    #: test-name globs of scopes known to break their budget (strict xfails)
    known_failures: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for i, part in enumerate(self.parts):
            if part not in PARTS + FAMILIES:
                raise ConfigError(f"parts[{i}]", f"unknown part {part!r}; use "
                                  f"{', '.join(PARTS + FAMILIES)}")
        if not self.parts:
            raise ConfigError("parts", "give at least one part")
        if self.method.scope != Scope():
            raise ConfigError("method.scope", "the atlas chooses the scopes; leave scope out")
        if self.recipe_possible:
            low = getattr(self.method, "bits", 0)
            if not low < self.uniform_bits < self.high_bits:
                raise ConfigError("uniform_bits", f"the recipe mixes {low} and {self.high_bits} "
                                  f"bits to match uniform_bits; need {low} < uniform_bits "
                                  f"({self.uniform_bits}) < high_bits ({self.high_bits})")
        for i, pattern in enumerate(self.known_failures):
            if not pattern.startswith("test_atlas"):
                raise ConfigError(f"known_failures[{i}]",
                                  f"must be a glob like 'test_atlas[L00.mlp]', got {pattern!r}")

    @property
    def recipe_possible(self) -> bool:
        """A recipe varies the method's ``bits`` (the blockwise quantizer has one)."""
        return isinstance(self.method, BlockwiseQuant)

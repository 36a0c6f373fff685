"""Mixed-precision recipes from a sensitivity atlas, written as configs the library runs as is.

The atlas measures each scope's drift when it alone is rounded to the low bit width. A recipe
spends a bit budget (the bits per weight of a uniform config) on keeping the scopes with the
most drift per parameter at a higher width: a greedy knapsack, exact enough when each scope's
cost is small against the budget. The inverse recipe spends the same budget on the *least*
sensitive scopes: a control showing whether the atlas' ranking, not the bit count, made the
difference.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from shrinktests.atlas import PARTS, ScopeResult, parse_scope_id
from shrinktests.compression.blockwise import BlockwiseQuant
from shrinktests.compression.scope import Scope
from shrinktests.spec import ConfigSet

#: bits of one float16 scale, stored once per block by the blockwise quantizer
SCALE_BITS = 16


def blockwise_bpw(bits: int, block_size: int) -> float:
    """Bits per weight of the blockwise quantizer (codes plus one float16 scale per block)."""
    return bits + SCALE_BITS / block_size


def suggest(results: Sequence[ScopeResult], low_bpw: float, high_bpw: float,
            target_bpw: float, order: Literal["sensitive", "inverse"] = "sensitive"
            ) -> list[str]:
    """Scope ids to keep at ``high_bpw`` so the average stays within ``target_bpw``.

    Scopes are taken by drift per parameter (most first, or least first for the inverse
    control), each one that still fits the remaining budget; ties break on the scope id, so the
    same atlas always gives the same recipe.
    """
    if not low_bpw <= target_bpw <= high_bpw:
        raise ValueError(f"target {target_bpw} bits/weight is outside [{low_bpw}, {high_bpw}]")
    total = sum(r.params for r in results)
    budget = (target_bpw - low_bpw) * total
    sign = -1.0 if order == "sensitive" else 1.0
    ranked = sorted(results, key=lambda r: (sign * r.drift.kl_mean / max(r.params, 1), r.scope))
    chosen = []
    for r in ranked:
        cost = (high_bpw - low_bpw) * r.params
        if cost <= budget + 1e-9 * total:
            chosen.append(r.scope)
            budget -= cost
    return chosen


def expected_bpw(results: Sequence[ScopeResult], high: Sequence[str], low_bpw: float,
                 high_bpw: float) -> float:
    """Average bits per weight of the scopes when ``high`` are kept at ``high_bpw``."""
    total = sum(r.params for r in results)
    keep = set(high)
    bits = sum(r.params * (high_bpw if r.scope in keep else low_bpw) for r in results)
    return bits / total if total else 0.0


def _scope_table(part: str, layers: list[int]) -> dict[str, Any]:
    if part in PARTS:
        return {"part": part, "layers": layers}
    return {"layers": layers, "include": f"*.{part}"}


def _params(method: BlockwiseQuant, scope: dict[str, Any] | None = None) -> dict[str, Any]:
    """A method's parameters as a configs-file table: defaults and None left out."""
    out: dict[str, Any] = {"method": method.name, "bits": method.bits,
                           "block_size": method.block_size}
    if method.levels is not None:
        out["levels"] = list(method.levels)
    if scope:
        out["scope"] = scope
    return out


def recipe_step(method: BlockwiseQuant, high: Sequence[str], high_bits: int) -> dict[str, Any]:
    """The ``mixed`` step: one rule per part listing the layers kept at ``high_bits``, then the
    atlas' own method for every other decoder weight (first matching rule wins)."""
    by_part: dict[str, list[int]] = {}
    for scope_id in high:
        s = parse_scope_id(scope_id)
        by_part.setdefault(s.part, []).append(s.layer)
    high_method = replace(method, bits=high_bits, levels=None, scope=Scope())
    rules = [_params(high_method, _scope_table(part, sorted(layers)))
             for part, layers in sorted(by_part.items())]
    rules.append(_params(method))
    return {"method": "mixed", "rules": rules}


def uniform_step(method: BlockwiseQuant, bits: int) -> dict[str, Any]:
    return _params(replace(method, bits=bits, levels=None, scope=Scope()))


@dataclass(frozen=True)
class Entry:
    """One ``[[config]]`` of a written recipe file."""

    name: str
    description: str
    step: dict[str, Any]


def toml_value(value: Any) -> str:
    """A value in TOML inline syntax (strings, numbers, booleans, lists, inline tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string for everything json escapes
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def configs_file(configs: ConfigSet, entries: Sequence[Entry], header: str) -> str:
    """A complete configs file: the source file's settings and reference, then each entry as
    the reference's steps plus its own step, so ``pytest suites/ --shrink-configs FILE`` runs
    it as written and judges it with the same default budgets."""
    reference = configs.get(configs.reference)
    ref_steps = [{k: v for k, v in p.items() if v is not None} for p in reference.params()]
    lines = [*(f"# {line}" if line else "#" for line in header.splitlines()), "",
             "[settings]", f"reference = {toml_value(reference.name)}",
             f"near_tie_epsilon = {configs.near_tie_epsilon!r}",
             f"confidence = {configs.confidence!r}",
             # the reference's budgets are the file's defaults (a reference has no drift tests)
             f"budgets = {toml_value([str(b) for b in reference.budgets])}", ""]
    for name, description, steps in [(reference.name, reference.description, []),
                                     *((e.name, e.description, [e.step]) for e in entries)]:
        lines += ["[[config]]", f"name = {toml_value(name)}",
                  f"description = {toml_value(description)}", "steps = ["]
        lines += [f"  {toml_value(_drop_none(s))}," for s in [*ref_steps, *steps]]
        lines += ["]", ""]
    return "\n".join(lines)


def _drop_none(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_drop_none(v) for v in value]
    return value

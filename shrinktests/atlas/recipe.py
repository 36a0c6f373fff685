"""Mixed-precision recipes from a sensitivity atlas, written as configs the library runs as is.

The atlas measures each scope's drift (KL) when it alone is rounded to the method's bit width,
and the scope's weight error at every width the recipe may use (cheap: no forward pass). Within
one scope, KL is close to proportional to the weight error (second order: KL ≈ ½ δᵀFδ for a
perturbation δ of fixed shape), so a scope's KL at b bits is predicted as
``KL(low) · MSE(b) / MSE(low)``. Across scopes that proportion is exactly what MSE cannot tell
(see the atlas' rank correlation), which is why each scope's KL is measured.

The recipe spends the bit budget of a uniform config greedily, one bit of one scope at a time,
on the step that removes the most predicted KL per bit spent, between the method's width and
``high_bits``; since a scope's predicted KL falls ever more slowly with each bit, the greedy
allocation is the optimum of the predicted total (up to the last step that does not fit). The
inverse control hands the same widths, within each part, to the scopes in the opposite order of
sensitivity: the same bits per weight, the ranking reversed.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from shrinktests.atlas.measure import ScopeResult, parse_scope_id
from shrinktests.compression.blockwise import BlockwiseQuant
from shrinktests.compression.scope import Scope
from shrinktests.spec.atlas import PARTS
from shrinktests.spec.files import ConfigSet

#: bits of one float16 scale, stored once per block by the blockwise quantizer
SCALE_BITS = 16

Allocation = dict[str, int]  # scope id -> bit width


def blockwise_bpw(bits: int, block_size: int) -> float:
    """Bits per weight of the blockwise quantizer (codes plus one float16 scale per block)."""
    return bits + SCALE_BITS / block_size


def predicted_kl(r: ScopeResult, bits: int) -> float:
    """A scope's KL at ``bits``, scaled from the measured one by its weight error."""
    if r.mse <= 0:
        return 0.0
    return r.drift.kl_mean * r.mse_by_bits[bits] / r.mse


def allocate(results: Sequence[ScopeResult], widths: Sequence[int],
             bpw: Callable[[int], float], target_bpw: float) -> Allocation:
    """Bit width per scope, from ``widths`` (ascending; the first is the atlas method's), that
    minimises the total predicted KL with an average of at most ``target_bpw`` bits per
    weight. Ties break on the scope id, so the same atlas always gives the same recipe."""
    total = sum(r.params for r in results)
    if not bpw(widths[0]) <= target_bpw:
        raise ValueError(f"target {target_bpw} bits/weight is below the lowest width's "
                         f"{bpw(widths[0])}")
    budget = (target_bpw - bpw(widths[0])) * total
    level = {r.scope: 0 for r in results}
    by_id = {r.scope: r for r in results}

    def gain(sid: str) -> tuple[float, float] | None:
        i = level[sid]
        if i + 1 >= len(widths):
            return None
        r = by_id[sid]
        cost = (bpw(widths[i + 1]) - bpw(widths[i])) * r.params
        drop = predicted_kl(r, widths[i]) - predicted_kl(r, widths[i + 1])
        return drop / cost, cost

    while True:
        options = [(g[0], sid, g[1]) for sid in sorted(level)
                   if (g := gain(sid)) is not None and g[1] <= budget + 1e-9 * total]
        if not options:
            break
        _, sid, cost = min(options, key=lambda o: (-o[0], o[1]))
        level[sid] += 1
        budget -= cost
    return {sid: widths[i] for sid, i in level.items()}


def inverse(results: Sequence[ScopeResult], allocation: Mapping[str, int]) -> Allocation:
    """The control: within each group of scopes of one part and size, the allocation's
    widths handed to the scopes from the least to the most sensitive (same bits per weight)."""
    out: Allocation = {}
    for part, size in sorted({(r.part, r.params) for r in results}):
        group = sorted((r for r in results if (r.part, r.params) == (part, size)),
                       key=lambda r: (r.drift.kl_mean, r.scope))
        widths = sorted(allocation[r.scope] for r in group)
        out.update({r.scope: w for r, w in zip(reversed(group), widths, strict=True)})
    return out


def average_bpw(results: Sequence[ScopeResult], allocation: Mapping[str, int],
                bpw: Callable[[int], float]) -> float:
    total = sum(r.params for r in results)
    return sum(r.params * bpw(allocation[r.scope]) for r in results) / total if total else 0.0


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


def at_bits(method: BlockwiseQuant, bits: int) -> BlockwiseQuant:
    """The atlas method at another width (its own codebook only at its own width)."""
    levels = method.levels if bits == method.bits else None
    return replace(method, bits=bits, levels=levels, scope=Scope())


def recipe_step(method: BlockwiseQuant, allocation: Mapping[str, int]) -> dict[str, Any]:
    """The ``mixed`` step: a rule per (width, part) listing its layers, widest first, then the
    most common width for every other decoder weight (first matching rule wins)."""
    common = Counter(allocation.values()).most_common(1)[0][0] if allocation else method.bits
    groups: dict[tuple[int, str], list[int]] = {}
    for scope_id, bits in allocation.items():
        if bits != common:
            s = parse_scope_id(scope_id)
            groups.setdefault((bits, s.part), []).append(s.layer)
    rules = [_params(at_bits(method, bits), _scope_table(part, sorted(layers)))
             for (bits, part), layers in sorted(groups.items(), key=lambda g: (-g[0][0], g[0][1]))]
    rules.append(_params(at_bits(method, common)))
    return {"method": "mixed", "rules": rules}


def uniform_step(method: BlockwiseQuant, bits: int) -> dict[str, Any]:
    return _params(at_bits(method, bits))


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
             f"replay_epsilon = {configs.replay_epsilon!r}",
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

"""The atlas inside a shrinktests run: which prompts it scores, caching, the recipe comparison.

Shared by the pytest tests (``test_atlas[L03.mlp]``, ``test_atlas_recipe``) and the command
(``python -m shrinktests atlas``). Each scope's result is cached on disk under everything that
determines it (model, reference config, method, scope, scored tokens), so a warm run loads no
model, and a ``-k`` subset measures only the scopes it selects.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NotRequired, Protocol, TypedDict

from shrinktests.atlas.measure import (
    Atlas,
    AtlasError,
    ConfigResult,
    Probe,
    ScopeResult,
    atlas_scopes,
    describe_method,
    parse_scope_id,
    ranked,
    to_dict,
)
from shrinktests.core.heap import trim_heap
from shrinktests.judging.budgets import Budget
from shrinktests.judging.stats import spearman
from shrinktests.run.cache import atomic_write_text, cache_key
from shrinktests.spec.atlas import AtlasSettings

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from shrinktests.core.generation import Generation
    from shrinktests.run.cache import DiskCache
    from shrinktests.run.inputs import SessionOptions
    from shrinktests.run.model import ModelSource
    from shrinktests.run.progress import PhaseClock, Progress
    from shrinktests.run.variant import Variant
    from shrinktests.spec.files import CompressionConfig, ConfigSet, Suite


class AtlasHost(Protocol):
    """What the atlas needs of the run it measures in (a
    :class:`~shrinktests.session.session.ShrinkSession` is one): the reference model and its
    generations, the results cache, and where to report progress and time. Nothing else of
    the session is reachable from here."""

    cache: DiskCache
    clock: PhaseClock
    configs: ConfigSet
    options: SessionOptions
    progress: Progress

    @property
    def reference(self) -> CompressionConfig: ...

    @property
    def source(self) -> ModelSource: ...

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase: ...

    def numerics(self) -> dict[str, str]: ...

    def variant(self, name: str) -> Variant: ...

    def generations(self, name: str, suite: Suite) -> list[Generation]: ...


@dataclass(frozen=True)
class RecipeOutcome:
    """The suggested recipe, its file, and how it and its controls drifted."""

    allocation: dict[str, int]  # scope id -> bit width
    text: str
    #: config name -> result: the recipe, the uniform config of the same bits, the inverse
    results: dict[str, ConfigResult]
    recipe: str
    uniform: str
    inverse: str
    target_bpw: float


class RecipeData(TypedDict):
    """:class:`RecipeOutcome` as plain JSON for the reports."""

    allocation: dict[str, int]
    target_bpw: float
    text: str
    recipe: str
    uniform: str
    inverse: str
    #: config name -> :func:`~shrinktests.atlas.measure.to_dict` of its result
    results: dict[str, dict[str, Any]]


class AtlasData(TypedDict):
    """Everything the atlas measured, as plain JSON: the reports' atlas section and the
    atlas command's files render it, and xdist workers send it to the controller."""

    method: dict[str, Any]
    parts: list[str]
    budgets: list[str]
    #: :func:`~shrinktests.atlas.measure.to_dict` of each scope, most sensitive first
    scopes: list[dict[str, Any]]
    seconds: float
    #: how the restored model was checked (None: not yet)
    restored: str | None
    #: rank correlations with KL, (rho, p) each, from three scopes on
    spearman: NotRequired[dict[str, tuple[float, float]]]
    recipe: NotRequired[RecipeData]
    #: the atlas command's wall time, measurement and recipe included (not in a pytest run)
    wall_seconds: NotRequired[float]


class AtlasRun:
    """Lazily measured atlas of one session's reference model."""

    def __init__(self, session: AtlasHost, settings: AtlasSettings,
                 budgets: tuple[Budget, ...]) -> None:
        self.session = session
        self.settings = settings
        self.budgets = budgets
        self.results: dict[str, ScopeResult] = {}
        self.recipe: RecipeOutcome | None = None
        self.restored: str | None = None  # how the restored model was checked
        self._atlas: Atlas | None = None
        self._probe_key: str | None = None

    # ------------------------------------------------------------------ inputs

    def suites(self) -> list[Suite]:
        """The run's suites the atlas scores (``suites = [...]``; empty: all of them)."""
        run = list(self.session.options.suites)
        if not self.settings.suites:
            return run
        names = {s.name for s in run}
        missing = [n for n in self.settings.suites if n not in names]
        if missing:
            raise AtlasError(f"[settings.atlas] suites names {', '.join(map(repr, missing))}, "
                             f"not among this run's suites ({', '.join(sorted(names))})")
        return [s for s in run if s.name in self.settings.suites]

    def n_layers(self) -> int:
        """Decoder layers of the model, from its config.json (no model load)."""
        config = json.loads((self.session.source.path / "config.json").read_text())
        text = config.get("text_config", config)
        n = text.get("num_hidden_layers")
        if not isinstance(n, int) or n < 1:
            raise AtlasError(f"{self.session.source.path}/config.json has no num_hidden_layers")
        return n

    def scope_ids(self) -> list[str]:
        return [s.id for s in atlas_scopes(self.n_layers(), self.settings.parts)]

    def _continuations(self) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
        s = self.session
        gens = [g for suite in self.suites() for g in s.generations(s.reference.name, suite)]
        return [g.prompt_ids for g in gens], [g.token_ids for g in gens]

    def probe_key(self) -> str:
        if self._probe_key is None:
            s = self.session
            prompts, conts = self._continuations()
            self._probe_key = cache_key("atlas-probe", {
                "model": s.source.fingerprint,
                "reference": s.configs.get(s.reference.name).fingerprint(),
                "prompts": prompts, "continuations": conts,
                "epsilon": s.configs.near_tie_epsilon, "numerics": s.numerics()})
        return self._probe_key

    @property
    def tokens(self) -> int:
        return sum(len(c) for c in self._continuations()[1])

    def atlas(self) -> Atlas:
        """The live reference model with its baseline distributions recorded (built once)."""
        if self._atlas is None:
            s = self.session
            prompts, conts = self._continuations()
            probe = Probe(prompts, conts, s.tokenizer.pad_token_id, s.configs.near_tie_epsilon)
            model = s.variant(s.reference.name).model
            s.progress.status("atlas: recording the baseline's distributions")
            with s.clock("atlas"):
                probe.record(model)
            self._atlas = Atlas(model, probe)
        return self._atlas

    # ------------------------------------------------------------------ measuring

    def scope(self, scope_id: str) -> ScopeResult:
        """One scope's result: from memory, the disk cache, or measured now."""
        if scope_id not in self.results:
            curve = self.curve_bits()
            key = cache_key("atlas-scope", {"probe": self.probe_key(), "scope": scope_id,
                                            "method": self.settings.method.params(),
                                            "curve": curve})
            result: ScopeResult | None = self.session.cache.get("atlas", key)
            if result is None:
                self.settings.method.check_environment()
                s = self.session
                ids = self.scope_ids()
                where = f" ({ids.index(scope_id) + 1}/{len(ids)})" if scope_id in ids else ""
                s.progress.status(f"atlas: measuring scope {scope_id}{where}")
                with s.clock("atlas"):
                    result = self.atlas().measure(self.settings.method,
                                                  parse_scope_id(scope_id), curve)
                trim_heap()  # the scope's perturbed weights and log-probs, freed
                s.progress.clear()
                s.cache.put("atlas", key, result)
            self.results[scope_id] = result
        return self.results[scope_id]

    def curve_bits(self) -> list[int]:
        """The widths a recipe may give a scope: the method's bits up to ``high_bits``."""
        if not self.settings.recipe_possible:
            return []
        low = getattr(self.settings.method, "bits", 0)
        return list(range(low, self.settings.high_bits + 1))

    def measure_all(self, progress: Callable[[str], None] | None = None) -> list[ScopeResult]:
        out = []
        for scope_id in self.scope_ids():
            out.append(self.scope(scope_id))
            if progress is not None:
                progress(scope_id)
        return out

    def check_restored(self) -> str:
        """After live measurements, the restored model must score exactly as the baseline."""
        if self._atlas is None:
            self.restored = "not needed (every result came from the cache)"
        else:
            self._atlas.check_restored()
            self.restored = "exact (restored model reproduces the baseline log-probs bit for bit)"
        return self.restored

    # ------------------------------------------------------------------ recipe

    def compare_recipe(self, folder: Path | None = None) -> RecipeOutcome:
        """Suggest a recipe from the full atlas, write it as a configs file, read that file
        back through the normal loader, and score it against the uniform config of the same
        bits per weight and the inverse control."""
        from shrinktests.atlas.recipe import (
            Entry,
            allocate,
            average_bpw,
            blockwise_bpw,
            configs_file,
            inverse,
            recipe_step,
            uniform_step,
        )
        from shrinktests.compression.blockwise import BlockwiseQuant
        from shrinktests.spec.files import load_configs

        method = self.settings.method
        if not isinstance(method, BlockwiseQuant):
            raise AtlasError(f"a recipe varies the bits of the blockwise quantizer; the atlas "
                             f"method is {method.name!r}")
        results = [self.scope(i) for i in self.scope_ids()]

        def bpw(bits: int) -> float:
            return blockwise_bpw(bits, method.block_size)

        target = bpw(self.settings.uniform_bits)
        mine = allocate(results, self.curve_bits(), bpw, target)
        control = inverse(results, mine)
        hb, ub, lb = self.settings.high_bits, self.settings.uniform_bits, method.bits
        names = (f"atlas-{lb}-{hb}bit", f"uniform-{ub}bit", f"atlas-inverse-{lb}-{hb}bit")
        entries = [
            Entry(names[0], f"Atlas recipe: {lb} to {hb} bits per scope where they remove the "
                  f"most predicted KL per bit ({average_bpw(results, mine, bpw):.2f} "
                  f"bits/weight, budget {target:.2f})", recipe_step(method, mine)),
            Entry(names[1], f"Every decoder weight at {ub} bits ({target:.2f} bits/weight)",
                  uniform_step(method, ub)),
            Entry(names[2], "Control: the recipe's widths handed out in reverse order of "
                  "sensitivity", recipe_step(method, control)),
        ]
        s = self.session
        header = (f"Mixed-precision recipe suggested by `python -m shrinktests atlas` for\n"
                  f"{s.source.describe()}: {describe_method(method.params())},\n"
                  f"drift measured on {self.tokens} baseline tokens of suites "
                  f"{', '.join(x.name for x in self.suites())}. Run it with\n"
                  f"  pytest suites/ --shrink-configs recipe.toml")
        text = configs_file(s.configs, entries, header)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "recipe.toml"
            atomic_write_text(path, text)
            parsed = load_configs(path)  # what a user's run would read
        n_ref = len(s.reference.steps)
        scored: dict[str, ConfigResult] = {}
        for name in names:
            config = parsed.get(name)
            key = cache_key("atlas-config", {"probe": self.probe_key(),
                                             "config": config.fingerprint()})
            result: ConfigResult | None = s.cache.get("atlas", key)
            if result is None:
                result = self.atlas().evaluate(name, config.steps[n_ref:])
                trim_heap()  # the whole model's quantized copies and log-probs, freed
                s.cache.put("atlas", key, result)
            scored[name] = result
        if folder is not None:
            atomic_write_text(folder / "recipe.toml", text)
        self.recipe = RecipeOutcome(mine, text, scored, *names, target)
        return self.recipe

    # ------------------------------------------------------------------ report data

    def data(self) -> AtlasData:
        """Everything measured so far, as plain JSON-able data for the reports."""
        results = ranked(list(self.results.values()))
        mses = [r.mse for r in results]
        kls = [r.drift.kl_mean for r in results]
        out = AtlasData(
            method=self.settings.method.params(),
            parts=list(self.settings.parts),
            budgets=[str(b) for b in self.budgets],
            scopes=[to_dict(r) for r in results],
            seconds=sum(r.seconds for r in results),
            restored=self.restored,
        )
        if len(results) >= 3:
            out["spearman"] = {"mse": spearman(mses, kls),
                               "rel_error": spearman([r.rel_error for r in results], kls)}
        if self.recipe is not None:
            rec = self.recipe
            out["recipe"] = RecipeData(
                allocation=rec.allocation, target_bpw=rec.target_bpw, text=rec.text,
                recipe=rec.recipe, uniform=rec.uniform, inverse=rec.inverse,
                results={k: to_dict(v) for k, v in rec.results.items()})
        return out


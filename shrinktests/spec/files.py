"""Suites and compression configs as validated data (TOML files in ``suites/``).

Every problem is raised as one :class:`SpecError` naming the file, the entry and the field, so
the plugin can turn it into a pytest usage error instead of a traceback.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

from shrinktests.compression.base import Method
from shrinktests.compression.registry import build_method
from shrinktests.core.schema import ConfigError, coerce_dataclass, nearest_name
from shrinktests.judging.budgets import Budget, BudgetError, merge_budgets, parse_budget
from shrinktests.judging.constraints import Checker, ListItems
from shrinktests.spec.atlas import BUDGET_METRICS as ATLAS_BUDGET_METRICS
from shrinktests.spec.atlas import AtlasSettings

_ID = re.compile(r"[a-z0-9][a-z0-9_-]*")


class SpecError(ValueError):
    """Invalid suite or configs file: ``path``, ``entry`` (may be empty) and ``field``."""

    def __init__(self, path: Path | str, entry: str, field: str, problem: str) -> None:
        where = f"{path}"
        if entry:
            where += f", {entry}"
        if field:
            where += f", field {field!r}"
        super().__init__(f"{where}: {problem}")


# --------------------------------------------------------------------------- suites


@dataclass(frozen=True)
class Prompt:
    """One ``[[prompt]]``: its id, the text sent to the model and the checks on the answer."""

    id: str
    text: str
    checks: tuple[Checker, ...] = ()

    def __post_init__(self) -> None:
        if not _ID.fullmatch(self.id):
            raise ConfigError("id", "use lowercase letters, digits, - and _")
        if not self.text.strip():
            raise ConfigError("text", "empty prompt")

    @property
    def max_items(self) -> int | None:
        """The most list items the prompt's ``list_items`` check allows (for overshoot)."""
        limits = [c.max for c in self.checks if isinstance(c, ListItems) and c.max < 1_000_000]
        return min(limits) if limits else None


@dataclass(frozen=True)
class Suite:
    """A named list of prompts generated together, with shared decoding settings."""

    name: str
    path: Path
    description: str
    chat_template: bool
    max_new_tokens: int
    prompts: tuple[Prompt, ...]

    def prompt(self, prompt_id: str) -> Prompt:
        for p in self.prompts:
            if p.id == prompt_id:
                return p
        raise KeyError(prompt_id)


@dataclass(frozen=True)
class SuiteHead:
    """``[suite]``: the suite's name and the decoding settings its prompts share."""

    name: str
    description: str = ""
    chat_template: bool = True
    max_new_tokens: int = 48

    def __post_init__(self) -> None:
        if not _ID.fullmatch(self.name):
            raise ConfigError("name", f"{self.name!r}: use lowercase letters, digits, - and _")
        if not 1 <= self.max_new_tokens <= 4096:
            raise ConfigError("max_new_tokens", f"must be in 1..4096, got {self.max_new_tokens}")


_SUITE_KEYS = {f.name for f in fields(SuiteHead)}
_PROMPT_KEYS = {f.name for f in fields(Prompt)}


def _load_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise SpecError(path, "", "", "file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(path, "", "", f"not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise SpecError(path, "", "", f"not UTF-8 text: {exc}") from None
    except OSError as exc:
        raise SpecError(path, "", "", f"cannot read: {exc.strerror or exc}") from None


def _unknown(path: Path, entry: str, data: Mapping[str, Any], allowed: set[str]) -> None:
    for key in data:
        if key not in allowed:
            raise SpecError(
                path, entry, key,
                f"unknown key{nearest_name(key, allowed)}; known: {', '.join(sorted(allowed))}",
            )


def _typed(path: Path, entry: str, field: str, value: Any, kind: type, what: str) -> Any:
    if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
        raise SpecError(path, entry, field, f"must be {what}, got {value!r}")
    return value


def load_suite(path: Path) -> Suite:
    """Parse and validate one suite file."""
    data = _load_toml(path)
    _unknown(path, "", data, {"suite", "prompt"})
    head = data.get("suite")
    if not isinstance(head, dict):
        raise SpecError(path, "", "suite", "missing [suite] table with at least name = \"...\"")
    _unknown(path, "[suite]", head, _SUITE_KEYS)
    try:
        suite: SuiteHead = coerce_dataclass(SuiteHead, head)
    except ConfigError as exc:
        raise SpecError(path, "[suite]", exc.field, exc.problem) from None
    raw_prompts = data.get("prompt", [])
    if not isinstance(raw_prompts, list) or not raw_prompts:
        raise SpecError(path, "", "prompt", "a suite needs at least one [[prompt]]")
    prompts: list[Prompt] = []
    for i, raw in enumerate(raw_prompts):
        pid = raw.get("id") if isinstance(raw, dict) else None
        entry = f"prompt {pid!r}" if isinstance(pid, str) else f"prompt #{i + 1}"
        if not isinstance(raw, dict):
            raise SpecError(path, entry, "", "must be a table")
        _unknown(path, entry, raw, _PROMPT_KEYS)
        try:
            prompt: Prompt = coerce_dataclass(Prompt, raw)
        except ConfigError as exc:
            raise SpecError(path, entry, exc.field, exc.problem) from None
        if any(p.id == prompt.id for p in prompts):
            raise SpecError(path, entry, "id", "duplicate id")
        prompts.append(prompt)
    return Suite(suite.name, path, suite.description, suite.chat_template,
                 suite.max_new_tokens, tuple(prompts))


# --------------------------------------------------------------------------- configs

Expectation = Literal["passes", "breaks"]


ArtifactKind = Literal["checkpoint", "gguf"]
#: what runs a config's model: transformers (PyTorch's kernels) or llama.cpp (a GGUF file)
ENGINES = ("transformers", "llama.cpp")


@dataclass(frozen=True)
class Artifact:
    """A compressed model that already exists, tested as it is: a Hugging Face folder
    (``checkpoint``: whatever its ``quantization_config`` says, or a model with fewer layers)
    or a GGUF file (``gguf``: dequantized at load, so llama.cpp's weight rounding, not its
    runtime arithmetic)."""

    kind: ArtifactKind
    path: Path

    def params(self) -> dict[str, Any]:
        return {self.kind: str(self.path)}


@dataclass(frozen=True)
class CompressionConfig:
    """A named pipeline of compression steps, with its budgets and expected outcome."""

    name: str
    steps: tuple[Method, ...]
    budgets: tuple[Budget, ...]
    expect: Expectation
    description: str
    #: test-name globs (e.g. "test_constraint[*multiplication*]") that are known to fail for
    #: this config: strict xfails, so a fixed regression shows up as XPASS and gets removed
    known_failures: tuple[str, ...] = ()
    #: this config's own ``replay_epsilon`` (None: the one in ``[settings]``), for a method
    #: that amplifies rounding differences (dynamic activation quantization)
    replay_epsilon: float | None = None
    #: a released model to load as the candidate instead of compressing the baseline
    artifact: Artifact | None = None
    #: what runs it: "transformers", or "llama.cpp" for a GGUF file (``gguf = ...``, a
    #: ``gguf`` method step written as a file, or, with neither, the model's own GGUF)
    engine: str = "transformers"

    def params(self) -> list[dict[str, Any]]:
        own = ([self.artifact.params()] if self.artifact is not None
               else [s.params() for s in self.steps])
        return own if self.engine == "transformers" else [*own, {"engine": self.engine}]

    @property
    def uses_calibration(self) -> bool:
        return any(s.uses_calibration() for s in self.steps)

    @property
    def cpu_dependent(self) -> bool:
        """Whether its weights differ between CPUs (GPTQ's rounding decisions follow the
        calibration activations' float rounding): its per-prompt verdicts hold on the CPU
        its accepted record was made on."""
        return any(s.depends_on_cpu() for s in self.steps)

    @property
    def quantizes_activations(self) -> bool:
        """Whether its kernels round activations to integers (LLM.int8, W8A8): its outputs
        follow the machine's family of int8 kernels."""
        return any(s.quantizes_activations() for s in self.steps)

    def fingerprint(self) -> str:
        """Hash of what changes the weights (steps), not of budgets or descriptions."""
        blob = json.dumps(self.params(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class BenchSettings:
    """The fixed token workload of the throughput benchmarks (``[settings.benchmark]``).

    The first ``prompts`` prompts of the first suite, each forced to exactly ``new_tokens``
    new tokens (min = max), so every round of every config does the same work and a slower
    mean is a slower model, not a shorter answer.
    """

    prompts: int = 4
    new_tokens: int = 32
    rounds: int = 3
    warmup_rounds: int = 1

    def __post_init__(self) -> None:
        for name in ("prompts", "new_tokens", "rounds"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1, got {getattr(self, name)}")
        if self.warmup_rounds < 0:
            raise ConfigError("warmup_rounds", f"must be >= 0, got {self.warmup_rounds}")


def _check_range(name: str, value: float, low: float, high: float, closed: bool) -> None:
    if not (low <= value <= high if closed else low <= value < high):
        bracket = "]" if closed else ")"
        raise ConfigError(name, f"must be in [{low:g}, {high:g}{bracket}, got {value!r}")


@dataclass(frozen=True)
class Settings:
    """``[settings]``: what applies to every config of a configs file, validated by type
    like every other section (the ranges below say what a value can mean)."""

    #: the config every other one is compared with (default: the first)
    reference: str | None = None
    #: a step whose baseline top-1/top-2 margin is below this is a near-tie
    near_tie_epsilon: float = 0.02
    #: a config's output leaving its accepted one below this margin is a machine-dependent flip
    replay_epsilon: float = 0.1
    #: default budgets of every config, e.g. "kl_mean <= 0.05"
    budgets: tuple[str, ...] = ()
    benchmark: BenchSettings = BenchSettings()
    confidence: float = 0.95
    reference_top_k: int = 32
    reference_mass: float = 1.0
    atlas: AtlasSettings | None = None

    def __post_init__(self) -> None:
        _check_range("near_tie_epsilon", self.near_tie_epsilon, 0, 1, closed=False)
        _check_range("replay_epsilon", self.replay_epsilon, 0, 1, closed=False)
        _check_range("confidence", self.confidence, 0.5, 1, closed=False)
        _check_range("reference_mass", self.reference_mass, 0.5, 1, closed=True)
        if not 2 <= self.reference_top_k <= 4096:
            raise ConfigError("reference_top_k",
                              f"must be an integer in 2..4096, got {self.reference_top_k!r}")


@dataclass(frozen=True)
class ConfigSet:
    path: Path
    reference: str
    near_tie_epsilon: float
    configs: tuple[CompressionConfig, ...]
    benchmark: BenchSettings = BenchSettings()
    #: level of the intervals and tests of the aggregate comparisons (0.95: 95 %)
    confidence: float = 0.95
    #: stored reference: at most this many baseline tokens per step, fewer once they hold
    #: ``reference_mass`` of the probability (see shrinktests.run.reference)
    reference_top_k: int = 32
    reference_mass: float = 1.0
    #: the sensitivity atlas (``[settings.atlas]``); None: no atlas tests
    atlas: AtlasSettings | None = None
    atlas_budgets: tuple[Budget, ...] = ()
    #: a config's output that leaves its accepted one where the config's own top-1/top-2
    #: margin is below this is a machine-dependent flip (see shrinktests.accepted.replay)
    replay_epsilon: float = 0.1

    def names(self) -> list[str]:
        return [c.name for c in self.configs]

    def for_model_dtype(self, model_dtype: str) -> ConfigSet:
        """Every ``dtype = "auto"`` cast resolved to the model folder's own dtype, before
        anything is fingerprinted (``auto`` on a float32 folder *is* ``float32``)."""
        def resolved(c: CompressionConfig) -> CompressionConfig:
            steps = tuple(getattr(s, "for_model", lambda _dtype, s=s: s)(model_dtype)
                          for s in c.steps)
            return c if steps == c.steps else replace(c, steps=steps)
        return replace(self, configs=tuple(resolved(c) for c in self.configs))

    def reference_dtype(self) -> str:
        """The dtype the reference runs in: its cast's, float32 if it is not a plain cast."""
        steps = self.get(self.reference).steps
        dtype = getattr(steps[0], "dtype", "float32") if len(steps) == 1 else "float32"
        return str(dtype)

    def get(self, name: str) -> CompressionConfig:
        for c in self.configs:
            if c.name == name:
                return c
        raise KeyError(f"unknown config {name!r}; known: {', '.join(self.names())}")


@dataclass(frozen=True)
class ConfigEntry:
    """A ``[[config]]``'s own keys, beside what it builds (its steps or its artifact) and its
    budgets, which are parsed on their own."""

    name: str
    description: str = ""
    expect: Expectation = "passes"
    known_failures: tuple[str, ...] = ()
    replay_epsilon: float | None = None
    engine: str = "transformers"

    def __post_init__(self) -> None:
        if not _ID.fullmatch(self.name):
            raise ConfigError("name", "use lowercase letters, digits, - and _")
        for j, pattern in enumerate(self.known_failures):
            if not pattern.startswith("test_"):
                raise ConfigError(f"known_failures[{j}]", "must be a test-name glob like "
                                  f"'test_drift[*greeting*]', got {pattern!r}")
        if self.replay_epsilon is not None and not 0 <= self.replay_epsilon < 1:
            raise ConfigError("replay_epsilon", f"must be in [0, 1), got {self.replay_epsilon!r}")
        if self.engine not in ENGINES:
            raise ConfigError("engine", f"unknown engine {self.engine!r}"
                              f"{nearest_name(self.engine, ENGINES)}; known: {', '.join(ENGINES)}")


_ENTRY_KEYS = {f.name for f in fields(ConfigEntry)}
_CONFIG_KEYS = _ENTRY_KEYS | {"steps", "budgets", "checkpoint", "gguf"}
_ARTIFACT_KEYS = ("checkpoint", "gguf")
_SETTINGS_KEYS = {f.name for f in fields(Settings)}


def _budgets(path: Path, entry: str, raw: Any) -> list[Budget]:
    if not isinstance(raw, list):
        raise SpecError(path, entry, "budgets", "must be a list of strings like 'kl_mean <= 0.05'")
    out = []
    for i, text in enumerate(raw):
        try:
            out.append(parse_budget(text))
        except BudgetError as exc:
            raise SpecError(path, entry, f"budgets[{i}]", str(exc)) from None
    return out


def load_configs(path: Path, model_dtype: str = "float32") -> ConfigSet:
    """Parse and validate a configs file (``[settings]`` plus ``[[config]]`` entries);
    ``dtype = "auto"`` casts become ``model_dtype``, the model folder's own."""
    data = _load_toml(path)
    _unknown(path, "", data, {"settings", "config"})
    raw_settings = data.get("settings", {})
    if not isinstance(raw_settings, dict):
        raise SpecError(path, "", "settings", "must be a table")
    _unknown(path, "[settings]", raw_settings, _SETTINGS_KEYS)
    for table in ("benchmark", "atlas"):
        if not isinstance(raw_settings.get(table, {}), dict):
            raise SpecError(path, "[settings]", table, "must be a table")
    try:
        settings: Settings = coerce_dataclass(Settings, raw_settings)
    except ConfigError as exc:
        if exc.field.startswith("atlas."):
            raise SpecError(path, "[settings.atlas]", exc.field.removeprefix("atlas."),
                            exc.problem) from None
        raise SpecError(path, "[settings]", exc.field, exc.problem) from None
    default_budgets = _budgets(path, "[settings]", list(settings.budgets))
    raw_configs = data.get("config", [])
    if not isinstance(raw_configs, list) or not raw_configs:
        raise SpecError(path, "", "config", "needs at least one [[config]]")
    configs: list[CompressionConfig] = []
    for i, raw in enumerate(raw_configs):
        name = raw.get("name") if isinstance(raw, dict) else None
        entry = f"config {name!r}" if isinstance(name, str) else f"config #{i + 1}"
        if not isinstance(raw, dict):
            raise SpecError(path, entry, "", "must be a table")
        try:
            own: ConfigEntry = coerce_dataclass(
                ConfigEntry, {k: v for k, v in raw.items() if k in _ENTRY_KEYS})
        except ConfigError as exc:
            raise SpecError(path, entry, exc.field, exc.problem) from None
        if own.name in (c.name for c in configs):
            raise SpecError(path, entry, "name", "duplicate config name")
        # one step is written inline (method = "...", its parameters beside it); several as steps
        inline = {k: v for k, v in raw.items() if k not in _CONFIG_KEYS}
        artifact = _artifact(path, entry, raw, inline)
        if artifact is not None:
            step_specs = []
        elif "steps" in raw:
            _unknown(path, entry, raw, _CONFIG_KEYS)
            raw_steps = _typed(path, entry, "steps", raw["steps"], list, "a list of tables")
            if not raw_steps:
                raise SpecError(path, entry, "steps", "empty")
            step_specs = list(raw_steps)
        elif "method" in inline:
            step_specs = [inline]
        elif own.engine == "llama.cpp":
            step_specs = []  # the model's own GGUF file, under llama.cpp
        else:
            raise SpecError(path, entry, "method",
                            "give method = \"...\" (one step) or steps = [{method = ...}, ...], "
                            "or test a released model: checkpoint = \"folder\" or "
                            "gguf = \"file.gguf\"")
        steps = []
        for j, spec in enumerate(step_specs):
            prefix = f"steps[{j}]." if "steps" in raw else ""
            if not isinstance(spec, dict):
                raise SpecError(path, entry, f"{prefix.rstrip('.')}", "must be a table")
            try:
                steps.append(build_method(spec).with_base(path.parent))
            except ConfigError as exc:
                problem = exc.problem
                hint = nearest_name(exc.field, _CONFIG_KEYS)
                if not prefix and problem.startswith("unknown parameter;") and hint:
                    # an inline step shares its table with the config's own keys: a typo of
                    # one of those (expected = "breaks") reaches the method as a parameter
                    params = problem.partition("known: ")[2]
                    problem = (f"unknown key{hint}; config keys: "
                               f"{', '.join(sorted(_CONFIG_KEYS - {'steps'}))}; "
                               f"method parameters: {params}")
                raise SpecError(path, entry, f"{prefix}{exc.field}", problem) from None
        loaders = [s for s in steps if s.load_kwargs.__func__ is not Method.load_kwargs]  # type: ignore[attr-defined]
        if len(loaders) > 1 or (loaders and steps[0] is not loaders[0]):
            # it runs inside from_pretrained, before anything else: writing it first keeps
            # "steps run in the order written" true
            raise SpecError(path, entry, "steps", "a load-time quantizer (e.g. bnb-4bit) must be "
                            "the first step and there can be only one")
        budgets = merge_budgets(default_budgets, _budgets(path, entry, raw.get("budgets", [])))
        _check_engine(path, entry, own.engine, steps, artifact)
        configs.append(CompressionConfig(own.name, tuple(steps), budgets, own.expect,
                                         own.description, own.known_failures,
                                         own.replay_epsilon, artifact, own.engine))
    reference = settings.reference or configs[0].name
    if reference not in [c.name for c in configs]:
        raise SpecError(path, "[settings]", "reference",
                        f"{reference!r} is not a config; known: "
                        f"{', '.join(c.name for c in configs)}")
    atlas_budgets = _atlas_budgets(path, settings.atlas)
    return ConfigSet(path, reference, settings.near_tie_epsilon, tuple(configs),
                     settings.benchmark, settings.confidence, settings.reference_top_k,
                     settings.reference_mass, settings.atlas, atlas_budgets,
                     settings.replay_epsilon).for_model_dtype(model_dtype)


def suite_files_beside(configs_path: Path, project: Path | None = None) -> list[Path]:
    """The default suites: every other ``*.toml`` in the configs file's folder; for a configs
    file kept elsewhere (a recipe written by the atlas), those beside the ``project`` configs
    file (``suites/configs.toml``)."""
    paths = sorted(p for p in configs_path.parent.glob("*.toml") if p != configs_path)
    if not paths and project is not None and project.exists() and (
            project.resolve() != configs_path.resolve()):
        return suite_files_beside(project)
    if not paths:
        raise SpecError(configs_path, "", "", "no suite files beside this configs file")
    return paths


def _check_engine(path: Path, entry: str, engine: str, steps: Sequence[Method],
                  artifact: Artifact | None) -> None:
    """llama.cpp runs GGUF files only (transformers, the default, runs anything)."""
    if engine == "llama.cpp":
        gguf_step = len(steps) == 1 and steps[0].name == "gguf"
        if (artifact is not None and artifact.kind != "gguf") or (steps and not gguf_step):
            raise SpecError(path, entry, "engine",
                            "llama.cpp runs GGUF files: give gguf = \"file.gguf\", one "
                            "method = \"gguf\" step (written as a file), or neither (the "
                            "model's own GGUF)")


def _artifact(path: Path, entry: str, raw: Mapping[str, Any],
              inline: Mapping[str, Any]) -> Artifact | None:
    """``checkpoint = "folder"`` or ``gguf = "file.gguf"``, resolved against the configs
    file's folder; such a config loads the artifact as it is, so it has no steps."""
    given = [k for k in _ARTIFACT_KEYS if k in raw]
    if not given:
        return None
    kind = given[0]
    if len(given) > 1:
        raise SpecError(path, entry, kind, "give checkpoint or gguf, not both")
    extra = sorted({*inline, *({"steps"} & set(raw))})
    if extra:
        raise SpecError(path, entry, extra[0],
                        f"a {kind} config tests the artifact as it is: no method, steps or "
                        "method parameters beside it")
    value = _typed(path, entry, kind, raw[kind], str, "a path (relative to this file)")
    where = (path.parent / value).expanduser().resolve()
    if kind == "checkpoint":
        if not (where / "config.json").is_file():
            raise SpecError(path, entry, kind,
                            f"{where}: no such model folder (a Hugging Face folder with "
                            "config.json, as save_pretrained writes it)")
    elif not where.is_file() or where.suffix != ".gguf":
        raise SpecError(path, entry, kind, f"{where}: no such .gguf file")
    return Artifact(kind, where)  # type: ignore[arg-type]


def _atlas_budgets(path: Path, atlas: AtlasSettings | None) -> tuple[Budget, ...]:
    """``[settings.atlas] budgets``: each bounds one of the per-scope metrics."""
    if atlas is None:
        return ()
    budgets = _budgets(path, "[settings.atlas]", list(atlas.budgets))
    for i, b in enumerate(budgets):
        if b.metric not in ATLAS_BUDGET_METRICS:
            raise SpecError(path, "[settings.atlas]", f"budgets[{i}]",
                            f"a scope's budget bounds one of {', '.join(ATLAS_BUDGET_METRICS)}, "
                            f"not {b.metric!r}")
    return tuple(budgets)

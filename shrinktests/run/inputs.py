"""What every config's results are computed from, and the keys they are cached under.

The model source and its tokenizer, each suite's prompts as token ids and decoding settings,
the calibration prompts of activation-aware methods, and the fingerprints that make a cached
result stale: the model, the config (plus its calibration prompts), the suite's prompts and
decoding, and the numerics of this machine (versions, CPU kernels, threads).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from shrinktests.run.cache import cache_key
from shrinktests.run.engine import (
    DecodingSettings,
    batch_size_for,
    kv_bytes_per_token,
    render_prompt,
)
from shrinktests.run.model import (
    ModelSource,
    default_model_source,
    gguf_model_source,
    load_tokenizer,
    local_model_source,
    set_determinism,
)
from shrinktests.run.numerics import numerics
from shrinktests.spec.files import ConfigSet, Prompt, Suite

if TYPE_CHECKING:

    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class SessionOptions:
    model: Path | None
    configs: ConfigSet
    suites: tuple[Suite, ...]
    cache_dir: Path | None
    threads: int
    snapshot_dir: Path
    #: where the baseline's distributions come from: "live" (run the reference model),
    #: "stored" (the top-k file beside the snapshots) or "auto" (stored when it matches)
    reference: str = "auto"
    #: --snapshot-update: record the baseline live and write the stored reference
    record: bool = False
    #: --shrink-accept-failures: judge this machine's outputs as they are, to record them
    accept: bool = False
    #: where models run: "auto" (CUDA when there is one), "cpu", "cuda" or "cuda:N"
    device: str = "cpu"


@dataclass(frozen=True)
class Case:
    """One prompt of one suite, the unit a test is parametrized over."""

    suite: Suite
    prompt: Prompt

    @property
    def id(self) -> str:
        # "." rather than "/": syrupy drops "/" from snapshot file names and then cannot
        # relate the file back to its test (it would call it unused).
        return f"{self.suite.name}.{self.prompt.id}"


class RunInputs:
    """The model source, prompts and fingerprints of one run; loads torch and the tokenizer
    only when first asked (a warm run that reads every result from the cache loads neither)."""

    def __init__(self, options: SessionOptions) -> None:
        self.options = options
        self.configs = options.configs
        self._source: ModelSource | None = None
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self._torch_ready = False
        self._settings: dict[str, DecodingSettings] = {}
        self._artifacts: dict[str, ModelSource] = {}
        self._device: str | None = None
        self._prompt_ids: dict[str, list[list[int]]] = {}

    @property
    def source(self) -> ModelSource:
        if self._source is None:
            self.ensure_torch()
            if self.options.model is None:
                self._source = default_model_source(self.options.cache_dir)
            else:
                self._source = local_model_source(self.options.model, self.options.cache_dir)
        return self._source

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.source)
        return self._tokenizer

    def artifact_source(self, name: str) -> ModelSource | None:
        """The model folder of a ``checkpoint``/``gguf`` config (a GGUF converted once into
        the cache), with the fingerprint of its files; None for a config with steps."""
        artifact = self.configs.get(name).artifact
        if artifact is None:
            return None
        if name not in self._artifacts:
            self.ensure_torch()
            cache = self.options.cache_dir
            self._artifacts[name] = (local_model_source(artifact.path, cache)
                                     if artifact.kind == "checkpoint"
                                     else gguf_model_source(artifact.path, cache))
        return self._artifacts[name]

    @property
    def device(self) -> str:
        """The device models run on (``auto`` decided here, once torch is loaded)."""
        if self._device is None:
            wanted = self.options.device
            if wanted == "auto":
                import torch

                wanted = "cuda" if torch.cuda.is_available() else "cpu"
            self._device = wanted
        return self._device

    def ensure_torch(self) -> None:
        """Fixed seeds and thread count, set once before the first forward pass."""
        if not self._torch_ready:
            set_determinism(self.options.threads)
            self._torch_ready = True

    def cases(self) -> list[Case]:
        return [Case(s, p) for s in self.options.suites for p in s.prompts]

    def settings(self, suite: Suite) -> DecodingSettings:
        """A suite's decoding settings; its batch is the whole suite when the KV cache of
        all its rows fits the engine's memory budget (fewer rows per batch otherwise)."""
        if suite.name not in self._settings:
            longest = max((len(ids) for ids in self.prompt_ids(suite)), default=0)
            config = json.loads((self.source.path / "config.json").read_text())
            batch = batch_size_for(len(suite.prompts), longest + suite.max_new_tokens,
                                   kv_bytes_per_token(config.get("text_config", config)))
            self._settings[suite.name] = DecodingSettings(
                max_new_tokens=suite.max_new_tokens, chat_template=suite.chat_template,
                batch_size=batch)
        return self._settings[suite.name]

    def prompt_ids(self, suite: Suite) -> list[list[int]]:
        if suite.name not in self._prompt_ids:
            self._prompt_ids[suite.name] = [
                render_prompt(self.tokenizer, p.text, suite.chat_template) for p in suite.prompts]
        return self._prompt_ids[suite.name]

    def calibration(self) -> list[list[int]]:
        """Token ids of every prompt of the selected suites, for activation-aware methods."""
        return [ids for suite in self.options.suites for ids in self.prompt_ids(suite)]

    # ------------------------------------------------------------------ fingerprints

    def numerics(self) -> dict[str, str]:
        """What changes the rounding here (versions, CPU kernels, threads): part of the cache
        keys of everything computed by a forward pass, so a warm cache never hides a change
        of machine or thread count."""
        return numerics(self.options.threads, self.device)

    def config_fp(self, name: str) -> str:
        """The config's fingerprint, plus the calibration prompts where its steps use them
        (a changed suite then changes that config's results instead of reusing stale ones)."""
        config = self.configs.get(name)
        if (artifact := self.artifact_source(name)) is not None:  # the files, not the path
            own = cache_key("artifact", {"config": config.fingerprint(),
                                         "files": artifact.fingerprint})
        elif not config.uses_calibration:
            own = config.fingerprint()
        else:
            own = cache_key("calibrated", {"config": config.fingerprint(),
                                           "calibration": self.calibration()})
        if config.engine == "llama.cpp":  # another binding: other kernels, other results
            from shrinktests.run.llama_cpp import binding_version

            return cache_key("engine", {"own": own, "binding": binding_version()})
        return own

    def record_fingerprint(self, name: str) -> str:
        """What an accepted record must have been made for: the config's steps, plus the
        calibration prompts when its steps use them (unlike the cache key, not the version)."""
        config = self.configs.get(name)
        if (artifact := self.artifact_source(name)) is not None:
            blob = json.dumps({"config": config.fingerprint(), "files": artifact.fingerprint})
            return hashlib.sha256(blob.encode()).hexdigest()[:16]
        if not config.uses_calibration:
            return config.fingerprint()
        blob = json.dumps({"config": config.fingerprint(), "calibration": self.calibration()})
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def stats_key(self, name: str) -> str:
        return cache_key("stats", {"model": self.source.fingerprint,
                                   "config": self.config_fp(name)})

    def generation_key(self, name: str, suite: Suite) -> str:
        return cache_key("generation", {
            "model": self.source.fingerprint,
            "config": self.config_fp(name),
            "prompts": [p.text for p in suite.prompts],
            "decoding": self.settings(suite).key(),
            "numerics": self.numerics(),
        })

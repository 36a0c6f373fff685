"""The compressed models of a run: built on first use, released when their tests are done.

A config that crashes while building or running is remembered, so its later tests fail at
once with the same error (or skip, when its backend cannot run here) while every other config
goes on: one config crashing never takes down the others.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import NoReturn

from shrinktests.compression.base import MethodUnavailable
from shrinktests.run import portable
from shrinktests.run.cache import DiskCache
from shrinktests.run.inputs import RunInputs
from shrinktests.run.model import cache_root, stored_param_count
from shrinktests.run.progress import PhaseClock, Progress
from shrinktests.run.resources import return_freed_memory
from shrinktests.run.results import ConfigCrashed, ConfigRun
from shrinktests.run.variant import (
    Variant,
    VariantStats,
    build_artifact_variant,
    build_variant,
    check_vocabulary,
)


class VariantPool:
    def __init__(self, inputs: RunInputs, cache: DiskCache,
                 runs: MutableMapping[str, ConfigRun], progress: Progress | None = None,
                 clock: PhaseClock | None = None) -> None:
        self.inputs = inputs
        self.progress = progress or Progress()
        self.clock = clock or PhaseClock()
        self.cache = cache
        self.runs = runs
        self.reference = inputs.configs.reference
        self._variants: dict[str, Variant] = {}
        self._failed: dict[str, BaseException] = {}
        self._reference_params: int | None = None

    def get(self, name: str) -> Variant:
        """The compressed model for ``name``, built on first use; failures are remembered."""
        if name in self._failed:
            self._raise_failure(name)
        if name not in self._variants:
            config = self.inputs.configs.get(name)
            ref_params = None if name == self.reference else self.reference_params()
            if config.engine == "llama.cpp":
                what = "loading its GGUF file into llama.cpp" + (
                    f" ({config.artifact.path.name})" if config.artifact is not None
                    else " (written from the model's own GGUF first)" if config.steps else "")
            elif config.artifact is not None:
                what = f"loading {config.artifact.kind} {config.artifact.path.name}"
            else:
                steps = " + ".join(step.name for step in config.steps)
                what = f"loading the model and compressing it ({steps})"
            self.progress.status(f"{name}: {what}")
            with self.guard(name):
                self.inputs.ensure_torch()
                artifact = self.inputs.artifact_source(name)
                if config.engine == "llama.cpp":
                    self._variants[name] = self._llama_variant(name, ref_params)
                elif artifact is not None:
                    self._variants[name] = build_artifact_variant(
                        self.inputs.source, artifact, config, ref_params,
                        self.inputs.tokenizer.get_vocab(), self.inputs.device)
                else:
                    calibration = self.inputs.calibration() if config.uses_calibration else []
                    pinned = None
                    if config.cpu_dependent and portable.applies(self.inputs.device):
                        pinning = f"{name}: calibrated steps under pinned numerics (a child " \
                                  "process, one thread)"
                        self.progress.status(pinning)
                        start = time.perf_counter()
                        pinned = portable.pinned_results(
                            self.inputs.source, config, calibration, self.cache.root,
                            lambda text: self.progress.status(f"{pinning}: {text}"))
                        pinned_seconds = time.perf_counter() - start
                        self.progress.status(f"{name}: {what}")
                    self._variants[name] = build_variant(
                        self.inputs.source, config, ref_params, calibration,
                        self.inputs.device, pinned,
                        progress=lambda text: self.progress.status(f"{name}: {what}: {text}"),
                        keep_dtype=self.inputs.configs.reference_dtype())
                    if pinned is not None:
                        self._variants[name].stats.compress_seconds += pinned_seconds
                note_device_memory(self._variants[name].stats, self.inputs.device)
            return_freed_memory()  # what loading and compressing left behind
            self.progress.clear()
            built = self._variants[name].stats
            self.clock.add("load", built.load_seconds, name)
            self.clock.add("compress", built.compress_seconds, name)
            self.cache.put("stats", self.inputs.stats_key(name), self._variants[name].stats)
            self.runs[name].stats = self._variants[name].stats
        return self._variants[name]

    def _llama_variant(self, name: str, ref_params: int | None) -> Variant:
        """A GGUF file under llama.cpp, at the run's thread count; a candidate file must read
        the prompts with the baseline's vocabulary."""
        import torch

        from shrinktests.run.llama_cpp import build_llama_variant

        artifact = self.inputs.artifact_source(name)
        if artifact is not None:
            given = self.inputs.configs.get(name).artifact
            assert given is not None
            check_vocabulary(artifact, given, self.inputs.tokenizer.get_vocab())
        return build_llama_variant(self.inputs.configs.get(name), self.inputs.source,
                                   self.inputs.options.cache_dir or cache_root(), ref_params,
                                   torch.get_num_threads())

    def reference_params(self) -> int:
        """The uncompressed parameter count (bits per weight divide by it): from the source's
        safetensors headers, so a gate against the stored reference never builds the
        baseline just to count its weights; else from the reference config's own figures."""
        if self._reference_params is None:
            self._reference_params = (stored_param_count(self.inputs.source)
                                      or self.stats(self.reference).params)
        return self._reference_params

    @contextmanager
    def guard(self, name: str) -> Iterator[None]:
        """Run a step of config ``name``; if it raises, remember the failure (later calls fail
        at once) and fail only this config's test. A :class:`ConfigCrashed` from a step
        already remembered passes through."""
        try:
            yield
        except ConfigCrashed:
            raise
        except Exception as exc:
            self._failed[name] = exc
            self._raise_failure(name)

    def _raise_failure(self, name: str) -> NoReturn:
        exc = self._failed[name]
        if isinstance(exc, MethodUnavailable):
            import pytest

            pytest.skip(f"config {name!r} cannot run here: {exc}")
        self.runs[name].error = f"{type(exc).__name__}: {exc}"
        raise ConfigCrashed(f"config {name!r} failed: {type(exc).__name__}: {exc}") from exc

    def release(self, name: str) -> None:
        """Free a config's model once its tests are done (the reference stays loaded); on a
        GPU its memory goes back too, so only one candidate is on the device at a time."""
        if name != self.reference and self._variants.pop(name, None) is not None:
            return_freed_memory()
            if self.inputs.device.startswith("cuda"):
                import torch

                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(self.inputs.device)

    def cached_stats(self, name: str) -> VariantStats | None:
        """Stats already known (loaded variant or disk cache) without building anything."""
        if name in self._variants:
            return self._variants[name].stats
        cached: VariantStats | None = self.cache.get("stats", self.inputs.stats_key(name))
        return cached

    def stats(self, name: str) -> VariantStats:
        """Size/cost figures of a config, from the loaded variant or the disk cache."""
        cached = self.cached_stats(name)
        if cached is not None:
            self.runs[name].stats = cached
            return cached
        return self.get(name).stats


def note_device_memory(stats: VariantStats, device: str) -> None:
    """On a GPU: the peak device memory so far for this config (loading, compressing,
    and, updated later, generating), in the config's figures."""
    if not device.startswith("cuda"):
        return
    import torch

    peak = torch.cuda.max_memory_allocated(device) / 1e6
    stats.details["device"] = {"name": device, "peak_mb": max(
        peak, stats.details.get("device", {}).get("peak_mb", 0.0))}

"""From what a user asked for to the session's settings: one resolver for pytest and the CLI.

The pytest plugin reads ``--shrink-*`` options and ini keys, the ``python -m shrinktests``
command its own flags; both fill a :class:`RunRequest` and call :func:`resolve`, so the two
front ends cannot drift apart. Problems come back as data (:class:`OptionError` names the
setting, :class:`~shrinktests.spec.files.SpecError` the file and field) and each front end words
them with its own option names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from shrinktests.run.inputs import SessionOptions
from shrinktests.spec.files import SpecError, Suite, load_configs, load_suite, suite_files_beside
from shrinktests.spec.flags import default_threads


class OptionError(ValueError):
    """A bad setting: ``setting`` is its name (``model``, ``configs``, ...), which the caller
    turns into its own option (``--shrink-model``, ``--model``)."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting
        self.problem = problem


class NotConfigured(OptionError):
    """No configs file was given and none is at the default place: an error only when a
    shrinktests test is collected (the plugin is installed in projects that do not use it)."""


@dataclass(frozen=True)
class RunRequest:
    """What was asked for, paths already made absolute by the caller; None means default."""

    #: the project root: ``suites/configs.toml`` and ``snapshots/`` by default are under it
    root: Path
    configs: Path | None = None
    #: suite files; empty: every other ``*.toml`` beside the configs file (or beside the
    #: default configs file, for a configs file kept elsewhere such as an atlas recipe)
    suites: tuple[Path, ...] = ()
    model: Path | None = None
    #: a cache folder, or "none" to turn the results cache off; None: $SHRINKTESTS_CACHE or
    #: ~/.cache/shrinktests
    cache: str | None = None
    threads: int | None = None
    snapshots: Path | None = None
    reference: str = "auto"
    record: bool = False
    accept: bool = False
    #: "auto" (CUDA when there is one), "cpu", "cuda" or "cuda:N"
    device: str = "auto"
    #: processes of this run sharing the machine (pytest-xdist workers); divides the default
    #: thread count
    workers: int = 1


def resolve(request: RunRequest) -> SessionOptions:
    """Validate files and settings once, before anything loads a model."""
    from shrinktests.run.model import (
        ModelSourceError,
        cache_root,
        check_model_folder,
        folder_dtype,
    )

    default_configs = request.root / "suites" / "configs.toml"
    configs_path = request.configs or default_configs
    if request.configs is None and not configs_path.exists():
        raise NotConfigured("configs", f"no configs file at {configs_path}")
    model = request.model.expanduser() if request.model is not None else None
    if model is not None:
        try:
            check_model_folder(model)
        except ModelSourceError as exc:
            raise OptionError("model", str(exc)) from None
    # the reference's ``dtype = "auto"``: the folder's own (bf16 for most published models)
    configs = load_configs(configs_path, folder_dtype(model))
    paths = list(request.suites) or suite_files_beside(configs_path, default_configs)
    suites = tuple(load_suite(p) for p in paths)
    _unique_names(suites)
    cache = (None if request.cache == "none" else
             Path(request.cache).expanduser() if request.cache else cache_root())
    snapshots = request.snapshots or request.root / "snapshots"
    device = check_device(request.device)
    return SessionOptions(
        model=model, configs=configs, suites=suites, cache_dir=cache,
        threads=request.threads or default_threads(request.workers), snapshot_dir=snapshots,
        reference=request.reference, record=request.record,
        accept=request.accept, device=device)


def check_device(value: str) -> str:
    """A device the models can go to. ``auto`` is decided when the first model loads (so
    configuring a run never imports torch); an explicit ``cuda`` must exist here."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
        raise OptionError("device", f"must be auto, cpu, cuda or cuda:N, got {value!r}")
    if value.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise OptionError("device", f"{value}: no CUDA device here (torch "
                              f"{torch.__version__}: torch.cuda.is_available() is False); "
                              "use cpu or auto")
        index = int(value.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise OptionError("device", f"{value}: this machine has "
                              f"{torch.cuda.device_count()} CUDA device(s)")
    return value


def _unique_names(suites: tuple[Suite, ...]) -> None:
    for i, suite in enumerate(suites):
        other = next((o for o in suites[:i] if o.name == suite.name), None)
        if other is not None:  # case ids (suite.prompt) and snapshot names would collide
            raise SpecError(suite.path, "[suite]", "name",
                            f"{suite.name!r} is also the name of {other.path}")

"""``python -m shrinktests atlas|export`` (also the ``shrinktests`` console script).

The atlas is a measurement a user runs before choosing a recipe, with a progress bar and
files to keep; the same measurements back the ``test_atlas`` tests of a pytest run. Export
writes a config's model as the checkpoint that ships, checked against the tested model.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from shrinktests.atlas.measure import AtlasError
from shrinktests.compression.base import MethodUnavailable
from shrinktests.core.schema import ConfigError
from shrinktests.spec import flags
from shrinktests.spec.atlas import PARTS, AtlasSettings
from shrinktests.spec.files import SpecError

if TYPE_CHECKING:
    from shrinktests.session.session import ShrinkSession


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m shrinktests",
                                     description="shrinktests commands besides pytest")
    sub = parser.add_subparsers(dest="command", required=True)
    atlas = sub.add_parser(
        "atlas", help="sensitivity atlas: perturb one layer x sub-block at a time",
        description="Perturb every decoder layer's attention and MLP (or tensor families) "
        "one at a time with the [settings.atlas] method of the configs file (default: "
        "blockwise 2-bit, block 32), measure teacher-forced drift and reconstruction error, "
        "and suggest a mixed-precision recipe.")
    _shared(atlas, flags.SHARED)
    atlas.add_argument("--parts", metavar="LIST",
                       help=f"comma-separated sub-blocks or tensor families (default from the "
                       f"configs file, else {','.join(PARTS)}); e.g. q_proj,k_proj,v_proj,"
                       "o_proj,gate_proj,up_proj,down_proj")
    atlas.add_argument("--out", metavar="DIR", default="atlas",
                       help="folder for atlas.json/.md, heatmap.svg, scatter.svg, index.html, "
                       "recipe.toml (default: %(default)s)")
    atlas.add_argument("--no-recipe", action="store_true",
                       help="measure the scopes only; do not suggest and score a recipe")
    atlas.add_argument("--top", type=flags.positive_int, default=10,
                       help="scopes shown in the terminal table")
    export = sub.add_parser(
        "export", help="write a config's model as a Hugging Face checkpoint (a GGUF file for "
        "an engine = \"llama.cpp\" config)",
        description="Build CONFIG as the suites test it, save it with save_pretrained, load "
        "it back and check that it reproduces the tested model's log-probs; only then is "
        "the folder moved to --out. The folder can be gated later as a checkpoint = ... "
        "config. A llama.cpp config writes its GGUF file, read back by llama.cpp.")
    export.add_argument("config", metavar="CONFIG", help="config name in the configs file")
    export.add_argument("--out", metavar="DIR", required=True, help="folder (or .gguf file) "
                        "to write (must not exist)")
    _shared(export, tuple(f for f in flags.SHARED if f is not flags.SUITE))
    return parser


def _shared(command: argparse.ArgumentParser, shared: Sequence[flags.Flag]) -> None:
    """The options pytest takes as ``--shrink-NAME``, with this command's defaults."""
    for flag in shared:
        command.add_argument(f"--{flag.name}", **flag.kwargs())
    command.set_defaults(configs="suites/configs.toml", device="auto",
                         threads=flags.default_threads())


class UsageError(Exception):
    """A bad command-line value: reported in one line, exit code 2."""


def main(argv: Sequence[str] | None = None) -> int:
    from shrinktests.run.options import OptionError
    from shrinktests.run.results import ConfigCrashed
    from shrinktests.session.export import ExportError

    args = _parser().parse_args(argv)
    command = _export if args.command == "export" else _atlas
    try:
        return command(args)
    except OptionError as exc:
        print(f"shrinktests {args.command}: --{exc.setting} {exc.problem}", file=sys.stderr)
        return 2
    except (UsageError, SpecError, ConfigError, AtlasError, MethodUnavailable) as exc:
        print(f"shrinktests {args.command}: {exc}", file=sys.stderr)
        return 2
    except (ExportError, ConfigCrashed) as exc:
        print(f"shrinktests {args.command}: {exc}", file=sys.stderr)
        return 1


def _settings(args: argparse.Namespace, configured: AtlasSettings | None) -> AtlasSettings:
    settings = configured or AtlasSettings()
    if args.suite:  # explicit suite files: score all of them
        settings = replace(settings, suites=())
    if args.parts:
        parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
        try:
            settings = replace(settings, parts=parts)
        except ConfigError as exc:
            raise UsageError(f"--parts: {exc.problem}") from None
    return settings


def _snapshots(configs_path: Path) -> Path:
    """The snapshot folder beside the configs file's folder (``suites/`` → ``snapshots/``),
    else ``snapshots/`` here: where a stored reference may spare the baseline's generation."""
    beside = configs_path.resolve().parent.parent / "snapshots"
    return beside if beside.is_dir() else Path("snapshots")


def _session(args: argparse.Namespace) -> ShrinkSession:
    from shrinktests.run.options import RunRequest, resolve
    from shrinktests.session.session import ShrinkSession

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    configs_path = Path(args.configs)
    return ShrinkSession(resolve(RunRequest(
        root=Path.cwd(), configs=configs_path,
        suites=tuple(Path(p) for p in getattr(args, "suite", None) or ()),
        model=Path(args.model) if args.model else None, cache=args.cache,
        threads=args.threads, snapshots=_snapshots(configs_path), device=args.device)))


def _export(args: argparse.Namespace) -> int:
    from shrinktests.session.export import export_config

    session = _session(args)
    if args.config not in session.configs.names():
        raise UsageError(f"unknown config {args.config!r}; known: "
                         f"{', '.join(session.configs.names())}")
    print(f"shrinktests export: building {args.config} on {session.source.describe()}",
          file=sys.stderr)
    done = export_config(session, args.config, Path(args.out))
    note = ""
    if done.on_disk > 1.2 * done.tested_bytes:
        note = (f"; larger than the {done.tested_bytes / 1e6:.1f} MB the run measured: the "
                "method keeps dequantized weights, which save_pretrained writes as they are")
    print(f"wrote {done.folder}: {done.on_disk / 1e6:.1f} MB of weights; reloaded, it "
          f"reproduces the tested log-probs on {done.checked_tokens} tokens (largest "
          f"difference {done.max_delta:.2g}){note}")
    return 0


def _atlas(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from shrinktests.atlas.run import AtlasRun
    from shrinktests.report import atlas as atlas_report

    session = _session(args)
    configs = session.configs
    settings = _settings(args, configs.atlas)
    run = AtlasRun(session, settings, configs.atlas_budgets)
    start = time.perf_counter()
    ids = run.scope_ids()
    print(f"shrinktests atlas: {session.source.describe()}, {len(ids)} scopes, scoring "
          f"{run.tokens} baseline tokens of {', '.join(s.name for s in run.suites())}",
          file=sys.stderr)
    with tqdm(total=len(ids), unit="scope", file=sys.stderr) as bar:
        def tick(scope_id: str) -> None:
            r = run.results[scope_id]
            bar.set_postfix_str(f"{scope_id} KL {r.drift.kl_mean:.3f}")
            bar.update()
        run.measure_all(tick)
    out = Path(args.out)
    if not args.no_recipe and settings.recipe_possible:
        print("shrinktests atlas: scoring the suggested recipe and its controls", file=sys.stderr)
        run.compare_recipe(out)
    run.check_restored()
    data = run.data()
    data["wall_seconds"] = time.perf_counter() - start
    for line in atlas_report.render(data, args.top):
        print(line)
    written = atlas_report.write(out, data)
    if run.recipe is not None:
        written.append(out / "recipe.toml")
    print(f"wall time {data['wall_seconds']:.0f} s; wrote {', '.join(map(str, written))}")
    return 0

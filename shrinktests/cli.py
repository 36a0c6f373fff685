"""``python -m shrinktests atlas`` (also the ``shrinktests`` console script).

The atlas is a measurement a user runs before choosing a recipe, with a progress bar and
files to keep; the same measurements back the ``test_atlas`` tests of a pytest run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from shrinktests.atlas.measure import PARTS, AtlasError, AtlasSettings
from shrinktests.compression.base import MethodUnavailable
from shrinktests.schema import ConfigError
from shrinktests.spec import SpecError


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
    atlas.add_argument("--model", metavar="PATH", help="local Hugging Face causal LM folder "
                       "(default: the embedded SmolLM2-135M-Instruct)")
    atlas.add_argument("--configs", metavar="PATH", default="suites/configs.toml",
                       help="configs file with the reference and [settings.atlas] "
                       "(default: %(default)s)")
    atlas.add_argument("--suite", metavar="PATH", action="append",
                       help="suite file; repeat for several (default: those beside the "
                       "configs file, narrowed by [settings.atlas] suites)")
    atlas.add_argument("--parts", metavar="LIST",
                       help=f"comma-separated sub-blocks or tensor families (default from the "
                       f"configs file, else {','.join(PARTS)}); e.g. q_proj,k_proj,v_proj,"
                       "o_proj,gate_proj,up_proj,down_proj")
    atlas.add_argument("--out", metavar="DIR", default="atlas",
                       help="folder for atlas.json/.md, heatmap.svg, scatter.svg, index.html, "
                       "recipe.toml (default: %(default)s)")
    atlas.add_argument("--cache", metavar="DIR", help="cache folder, or 'none' (default: "
                       "$SHRINKTESTS_CACHE or ~/.cache/shrinktests)")
    atlas.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1),
                       help="torch CPU threads (default: %(default)s)")
    atlas.add_argument("--no-recipe", action="store_true",
                       help="measure the scopes only; do not suggest and score a recipe")
    atlas.add_argument("--top", type=int, default=10, help="scopes shown in the terminal table")
    return parser


class UsageError(Exception):
    """A bad command-line value: reported in one line, exit code 2."""


def main(argv: Sequence[str] | None = None) -> int:
    from shrinktests.options import OptionError

    args = _parser().parse_args(argv)
    try:
        return _atlas(args)
    except OptionError as exc:
        print(f"shrinktests atlas: --{exc.setting} {exc.problem}", file=sys.stderr)
        return 2
    except (UsageError, SpecError, ConfigError, AtlasError, MethodUnavailable) as exc:
        print(f"shrinktests atlas: {exc}", file=sys.stderr)
        return 2


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


def _atlas(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from shrinktests.atlas import report as atlas_report
    from shrinktests.atlas.run import AtlasRun
    from shrinktests.options import RunRequest, resolve
    from shrinktests.run.session import ShrinkSession

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    configs_path = Path(args.configs)
    session = ShrinkSession(resolve(RunRequest(
        root=Path.cwd(), configs=configs_path,
        suites=tuple(Path(p) for p in args.suite or ()),
        model=Path(args.model) if args.model else None, cache=args.cache,
        threads=args.threads, snapshots=_snapshots(configs_path))))
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

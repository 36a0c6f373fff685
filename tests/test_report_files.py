"""summary.md and index.html from summary data (no model), and index.html in a real headless
browser where one is installed."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from shrinktests.report.files import html, markdown, worst_regressions, write_report
from tests.test_report import AGGREGATES, POWER, _part, _row


def _example(case: str, kl: float, divergence: int | None = 3) -> dict[str, Any]:
    return {"case": case, "prompt": "Say <hi> | now", "divergence": divergence,
            "near_tie": False, "kl": kl, "top1": 0.5, "prefix": "The answer",
            "base": " is 391.", "cand": " is 421 | maybe\nor not"}


def _data() -> dict[str, Any]:
    full = {"tps": 40.0, "mb": 170.0, "bits": 10.3, "kl": 0.3, "top1": 0.8, "prompts": 2,
            "diverged": 2, "div_median": 3.0, "outputs": 2, "loops": 1, "adherence": 0.5}
    data = _part([_row("baseline", "ok", tps=20.0, mb=540.0, outputs=2, adherence=0.75),
                  _row("nf4", "FAIL (1)", **full),
                  _row("broken", "breaks (expected)", expect="breaks", **{**full, "kl": 11.0})],
                 ["baseline", "nf4", "broken"], 2, details={"nf4": "modes: loop 1"})
    data["examples"] = {"baseline": [], "nf4": [_example("s.a", 0.9), _example("s.b", 0.1)],
                        "broken": [_example("s.a", 11.0)]}
    data["timeline"] = {"baseline": [], "nf4": [["s.a", 3, 10], ["s.b", None, 8]],
                        "broken": [["s.a", 0, 10], ["s.b", 0, 8]]}
    return data


def test_worst_regressions_skip_configs_expected_to_break() -> None:
    assert [(n, ex["case"]) for n, ex in worst_regressions(_data())] == [("nf4", "s.a")]


def test_summary_md_is_a_table_and_the_regressions_side_by_side() -> None:
    md = markdown(_data())
    assert "**failing: nf4**" in md
    assert "| config | tok/s | vs ref |" in md
    assert ("| nf4 | 40.0 | - | 170 | 10.30 | 0.300 | 0.80 | 3 | - | 1/2 | 0/2 | 50% | FAIL (1) |"
            in md)
    assert "### nf4 on s.a" in md and "first divergence at token 3" in md
    # a cell may not break the table: pipes escaped, newlines as <br>, markup escaped
    assert "|  is 391. |  is 421 \\| maybe<br>or not |" in md
    assert "Say &lt;hi&gt; \\| now" in md
    assert "### broken" not in md
    assert "## Outputs that left the accepted ones" not in md  # nothing was replayed


def test_summary_md_lists_what_depended_on_the_machine() -> None:
    """The terminal prints counts; summary.md lists every stale record, replayed output and
    near-tie of the baseline."""
    data = {**_data(), "stale": ["nf4: accepted outputs and known failures not applied: x"],
            "replays": ["nf4 on s.a: this machine's output leaves the accepted output at "
                        "token 4, top-2 margin 0.0030: machine-dependent"],
            "near_ties": ["near-tie: nf4 on s.b diverges at token 2"]}
    md = markdown(data)
    for title, line in (("## Accepted records not applied", data["stale"][0]),
                        ("## Outputs that left the accepted ones", data["replays"][0]),
                        ("## Divergences at a near-tie of the baseline", data["near_ties"][0])):
        assert md.index(title) < md.index(f"- {line}")


def test_summary_md_and_index_html_say_what_each_comparison_could_detect() -> None:
    """The power lines of the terminal, one item per config, and the noise sentence once;
    data without power figures (written before they existed) renders without them."""
    data = {**_data(), "aggregates": AGGREGATES, "power": POWER}
    md = markdown(data)
    assert ("Smallest change each comparison would detect (80% power at 95%), and flips "
            "lost/gained against the baseline:") in md
    assert ("- **nf4**: adherence drop ≥ 0.14, loop increase ≥ 0.09, empty increase ≥ 0.07, "
            "KL change ≥ 0.022; flips adherence 5/2, loops 3/0") in md
    assert ('A pass within noise is not "no change": 41 prompts (82 constraints) cannot tell '
            "an adherence drop below 0.14 from noise (nf4, 80% power).") in md
    assert md.count("cannot tell") == 1
    assert "| near-ties |" in md and "| flips |" not in md
    page = html(data)
    assert "<li><b>int8</b>: adherence drop ≥ 0.12" in page and page.count("cannot tell") == 1
    older = {**_data(), "aggregates": AGGREGATES}
    assert "Smallest change" not in markdown(older) and "Smallest change" not in html(older)


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.links += [v or "" for k, v in attrs if k in ("src", "href")]


def test_index_html_is_self_contained_with_every_plot() -> None:
    page = html(_data())
    parser = _Collect()
    parser.feed(page)
    assert parser.tags.count("svg") == 7  # KL, top-1, loops, empty, adherence, speed, timeline
    assert not parser.links, "a self-contained report loads nothing"
    assert "script" not in parser.tags
    assert '<mark class="cand"> is 421 | maybe\nor not</mark>' in page
    assert "s.b: identical to the baseline" in page and "first divergence at token 3 of 10" in page


def test_write_report_writes_three_files(tmp_path: Path) -> None:
    files = write_report(tmp_path / "report", _data())
    assert sorted(p.name for p in files) == ["data.json", "index.html", "summary.md"]
    assert all(p.stat().st_mode & 0o044 for p in files), "readable by others, like any report"


def _browser() -> str | None:
    return next((b for b in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(b)), None)


@pytest.mark.skipif(_browser() is None, reason="no chromium here (Debian: apt install chromium)")
def test_index_html_renders_in_headless_chromium(tmp_path: Path) -> None:
    page = tmp_path / "index.html"
    page.write_text(html(_data()), encoding="utf-8")
    shot = tmp_path / "shot.png"
    common = [str(_browser()), "--headless", "--no-sandbox", "--disable-gpu",
              "--window-size=1200,1600"]
    dom = subprocess.run([*common, "--dump-dom", page.as_uri()], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    assert dom.count("<svg") == 7
    assert "FAIL (1)" in dom
    subprocess.run([*common, f"--screenshot={shot}", page.as_uri()], capture_output=True,
                   timeout=120, check=True)
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one

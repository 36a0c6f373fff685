"""The accepted state of each compressed config: its greedy outputs and its known failures.

The baseline's outputs are recorded as snapshots; this is the same for every other config.
``--shrink-accept-failures`` writes ``snapshots/accepted/<config>.toml`` for each config that
ran: the model and config fingerprints it was recorded for, the behaviour tests it failed then
(later runs treat them as strict xfails), and per prompt the greedy output (text and token
ids) with the steps where the config's own top-1/top-2 probability margin was small.

Why the outputs: a compressed small model decoding greedily passes many steps where two tokens
are almost equally likely. Another CPU or thread count rounds such a step the other way and
the rest of the answer changes, so verdicts read from free-running text would be pinned to the
machine that recorded them. With the outputs recorded, a run can tell that kind of flip from a
real change (see :mod:`shrinktests.accepted.replay`).

A record made for another model or another config is never applied: it is reported as stale
(with what changed) and the config is judged on its live outputs. The files are reviewed as
diffs in pull requests: a changed answer shows as a changed ``text`` and ``ids``.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shrinktests.core.generation import Generation
from shrinktests.run.cache import atomic_write_text
from shrinktests.spec.files import SpecError

FORMAT = 1
FOLDER = "accepted"
#: the record of earlier versions: one file of failures keyed by config name alone
LEGACY_FILE = "known_failures.toml"

#: a step's margin is written when it is below this (or below replay_epsilon, if larger):
#: the replay needs the recorded margin only where it is small
MARGIN_FLOOR = 0.05
_IDS_PER_LINE = 16


@dataclass(frozen=True)
class AcceptedOutput:
    """One accepted greedy output of a config on one prompt."""

    #: hash of the prompt's token ids and the decoding settings it was generated with
    prompt: str
    token_ids: tuple[int, ...]
    text: str
    finished: bool
    #: step -> the config's own top-1/top-2 probability margin, for steps below the record's
    #: ``margins_below``; an absent step had a margin of at least that
    margins: Mapping[int, float] = field(default_factory=dict)

    def generation(self, prompt_ids: Sequence[int]) -> Generation:
        """This output as a :class:`Generation` to judge (no top-k: checks read text and ids)."""
        n = len(self.token_ids)
        return Generation(prompt_ids=tuple(prompt_ids), token_ids=self.token_ids,
                          text=self.text, finished=self.finished,
                          top_ids=np.zeros((n, 0), dtype=np.int64),
                          top_logprobs=np.zeros((n, 0), dtype=np.float32))


@dataclass(frozen=True)
class AcceptedRecord:
    """Everything accepted for one config, with the fingerprints it holds for."""

    config: str
    model: str  # the model's fingerprint
    model_label: str
    fingerprint: str  # the config's fingerprint (its steps, and calibration prompts if used)
    steps: tuple[dict[str, Any], ...]  # the config's parameters then, to say what changed
    margins_below: float
    failures: Mapping[str, str]  # test name -> first line of its failure when recorded
    outputs: Mapping[str, AcceptedOutput]  # case id -> output
    #: the CPU it was recorded on (capability and kernel flags), kept for configs whose
    #: weights depend on it (GPTQ); None for the others, whose records hold on every CPU
    cpu: str | None = None

    def stale_reason(self, model: str, model_label: str, fingerprint: str,
                     steps: Sequence[dict[str, Any]]) -> str | None:
        """Why this record does not hold for the given model and config (None: it does)."""
        if model != self.model:
            return (f"recorded for another model ({self.model_label}@{self.model}; this run: "
                    f"{model_label}@{model})")
        if fingerprint != self.fingerprint:
            changed = describe_change(self.steps, steps)
            return f"recorded for another config ({changed})"
        return None


def prompt_key(prompt_ids: Sequence[int], decoding: Mapping[str, Any]) -> str:
    """Short hash of what an output was generated from, besides model and config."""
    blob = json.dumps({"ids": list(prompt_ids), "decoding": dict(decoding)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def low_margins(gen: Generation, below: float) -> dict[int, float]:
    """The steps of a live generation whose top-1/top-2 margin is below ``below``."""
    out = {}
    for step in range(len(gen.token_ids)):
        m = gen.margin(step)
        if m < below:
            out[step] = round(m, 4)
    return out


def describe_change(old: Sequence[dict[str, Any]], new: Sequence[dict[str, Any]]) -> str:
    """What differs between two configs' parameters, e.g. ``steps[0].quant_type: 'nf4' →
    'fp4'``; the calibration prompts when the steps are the same."""
    old_flat, new_flat = _flatten(_plain(list(old))), _flatten(_plain(list(new)))
    diffs = [f"{k}: {old_flat.get(k, '(none)')!r} → {new_flat.get(k, '(none)')!r}"
             for k in sorted(set(old_flat) | set(new_flat)) if old_flat.get(k) != new_flat.get(k)]
    if not diffs:
        return "same steps: the calibration prompts (the selected suites' prompts) changed"
    more = f", and {len(diffs) - 3} more" if len(diffs) > 3 else ""
    return ", ".join(diffs[:3]) + more


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _flatten(value: Any, prefix: str = "steps") -> dict[str, Any]:
    if isinstance(value, dict):
        return {k: v for key, item in value.items()
                for k, v in _flatten(item, f"{prefix}.{key}").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value)
                for k, v in _flatten(item, f"{prefix}[{i}]").items()}
    return {prefix: value}


# --------------------------------------------------------------------------- the file format

def path_for(folder: Path, config: str) -> Path:
    return folder / f"{config}.toml"


def load_folder(folder: Path) -> dict[str, AcceptedRecord]:
    """Every record in ``folder`` (missing folder: nothing accepted), keyed by config."""
    if not folder.is_dir():
        return {}
    records = {}
    for path in sorted(folder.glob("*.toml")):
        record = load(path)
        records[record.config] = record
    return records


def load(path: Path) -> AcceptedRecord:
    """Read and validate one record; a problem is a SpecError naming the file and field."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(path, "", "", f"not valid TOML: {exc}") from None
    known = {"format", "config", "model", "model_label", "fingerprint", "steps",
             "margins_below", "failures", "outputs", "cpu"}
    if unknown := set(data) - known:
        raise SpecError(path, "", sorted(unknown)[0],
                        f"unknown key; known: {', '.join(sorted(known))}")
    if data.get("format") != FORMAT:
        raise SpecError(path, "", "format", f"expected {FORMAT}, got {data.get('format')!r}; "
                        "re-record with --shrink-accept-failures")
    strings: dict[str, str] = {}
    for key in ("config", "model", "model_label", "fingerprint"):
        if not isinstance(value := data.get(key), str):
            raise SpecError(path, "", key, "must be a string")
        strings[key] = value
    if path.stem != strings["config"]:
        raise SpecError(path, "", "config", f"{strings['config']!r} does not match the file "
                        f"name {path.name!r}")
    try:
        steps = json.loads(data.get("steps", ""))
    except (TypeError, json.JSONDecodeError):
        steps = None
    if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
        raise SpecError(path, "", "steps", "must be a JSON list of step tables, as a string")
    below = data.get("margins_below")
    if isinstance(below, bool) or not isinstance(below, int | float) or not 0 <= below <= 1:
        raise SpecError(path, "", "margins_below", f"must be a number in [0, 1], got {below!r}")
    failures = data.get("failures", [])
    if not isinstance(failures, list) or not all(isinstance(t, str) for t in failures):
        raise SpecError(path, "", "failures", "must be a list of test names")
    cpu = data.get("cpu")
    if cpu is not None and not isinstance(cpu, str):
        raise SpecError(path, "", "cpu", "must be a string")
    raw_outputs = data.get("outputs", {})
    if not isinstance(raw_outputs, dict):
        raise SpecError(path, "", "outputs", "must be a table of [outputs.\"<suite>.<prompt>\"]")
    outputs = {case: _output(path, case, raw) for case, raw in raw_outputs.items()}
    return AcceptedRecord(
        config=strings["config"], model=strings["model"], model_label=strings["model_label"],
        fingerprint=strings["fingerprint"], steps=tuple(steps), margins_below=float(below),
        failures=dict.fromkeys(failures, ""), outputs=outputs, cpu=cpu)


def _output(path: Path, case: str, raw: Any) -> AcceptedOutput:
    entry = f"[outputs.{_key(case)}]"
    if not isinstance(raw, dict):
        raise SpecError(path, entry, "", "must be a table")
    known = {"prompt", "finished", "text", "ids", "margins"}
    if unknown := set(raw) - known:
        raise SpecError(path, entry, sorted(unknown)[0],
                        f"unknown key; known: {', '.join(sorted(known))}")
    for key, kind in (("prompt", str), ("finished", bool), ("text", str), ("ids", list)):
        if not isinstance(raw.get(key), kind):
            raise SpecError(path, entry, key, f"missing or not a {kind.__name__}")
    ids = raw["ids"]
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
        raise SpecError(path, entry, "ids", "must be a list of token ids (integers >= 0)")
    margins: dict[int, float] = {}
    for step, m in raw.get("margins", {}).items():
        if not step.isdigit() or int(step) >= len(ids) or isinstance(m, bool) \
                or not isinstance(m, int | float):
            raise SpecError(path, entry, "margins", f"bad entry {step} = {m!r}: want step = "
                            "margin, with step < the number of ids")
        margins[int(step)] = float(m)
    return AcceptedOutput(raw["prompt"], tuple(ids), raw["text"], raw["finished"], margins)


def render(record: AcceptedRecord) -> str:
    lines = [
        f"# Accepted state of config {record.config!r}: the behaviour tests it is known to",
        "# fail (strict xfails) and its greedy output per prompt, which later runs replay to",
        "# tell a machine's float rounding from a real change. Written by",
        "# `pytest suites/ --shrink-accept-failures`; review changes like snapshot diffs.",
        f"format = {FORMAT}",
        f"config = {_string(record.config)}",
        f"model = {_string(record.model)}",
        f"model_label = {_string(record.model_label)}",
        f"fingerprint = {_string(record.fingerprint)}",
        f"steps = {_string(json.dumps(list(record.steps), sort_keys=True))}",
        *([ "# the machines it holds for: calibrated weights, or a family of int8 kernels",
            f"cpu = {_string(record.cpu)}"] if record.cpu is not None else []),
        "# steps where the config's top-1/top-2 probability margin was below this are listed",
        f"margins_below = {record.margins_below!r}",
        "failures = [",
    ]
    for name, why in sorted(record.failures.items()):
        comment = f"  # {why[:120]}" if why else ""
        lines.append(f"  {_string(name)},{comment}")
    lines.append("]")
    for case, out in sorted(record.outputs.items()):
        ids = list(out.token_ids)
        lines += ["", f"[outputs.{_key(case)}]", f"prompt = {_string(out.prompt)}",
                  f"finished = {'true' if out.finished else 'false'}",
                  f"text = {_multiline(out.text)}", "ids = ["]
        lines += ["  " + ", ".join(map(str, ids[i:i + _IDS_PER_LINE])) + ","
                  for i in range(0, len(ids), _IDS_PER_LINE)]
        lines.append("]")
        pairs = ", ".join(f"{step} = {m!r}" for step, m in sorted(out.margins.items()))
        lines.append(f"margins = {{ {pairs} }}" if pairs else "margins = {}")
    return "\n".join(lines) + "\n"


def save(folder: Path, record: AcceptedRecord) -> Path:
    path = path_for(folder, record.config)
    atomic_write_text(path, render(record))
    return path


def _escape(s: str, quote_newlines: bool) -> str:
    out = []
    for ch in s:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n" and not quote_newlines:
            out.append("\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        elif 0xD800 <= ord(ch) <= 0xDFFF:  # not encodable; TOML has no escape for it either
            out.append("\\ufffd")
        else:
            out.append(ch)
    return "".join(out)


def _string(s: str) -> str:
    return '"' + _escape(s, quote_newlines=True) + '"'


def _multiline(s: str) -> str:
    """A TOML multi-line basic string: the text reads as it was generated, one line per line
    (the newline right after the opening quotes is not part of the value)."""
    return '"""\n' + _escape(s, quote_newlines=False) + '"""'


def _key(s: str) -> str:
    bare = re.fullmatch(r"[A-Za-z0-9_-]+", s) is not None
    return s if bare else _string(s)


# --------------------------------------------------------------------------- recording

def merged(old: AcceptedRecord | None, new: AcceptedRecord, ran: Iterable[str],
           failing: Mapping[str, str]) -> AcceptedRecord:
    """The record to write: ``new``'s fingerprints and outputs, the failures seen now, plus
    the old record's failures of tests that did not run and outputs of prompts not generated
    (a ``-k`` subset refreshes only what it ran). A stale ``old`` contributes nothing."""
    ran_now = set(ran)
    keep = (old is not None and old.model == new.model and old.fingerprint == new.fingerprint
            and old.cpu == new.cpu)
    failures = {t: why for t, why in (old.failures.items() if old and keep else ())
                if t not in ran_now}
    failures.update(failing)
    outputs = {**(old.outputs if old and keep else {}), **new.outputs}
    return AcceptedRecord(new.config, new.model, new.model_label, new.fingerprint, new.steps,
                          new.margins_below, dict(sorted(failures.items())),
                          dict(sorted(outputs.items())), new.cpu)


_BOILERPLATE = [  # what the test name already says, so the comment keeps what was found
    (re.compile(r"^config '[^']*' lost a constraint the baseline meets on \S+: "), "lost "),
    (re.compile(r"^drift of config '[^']*' on \S+ exceeds its budget: "), "drift: "),
    (re.compile(r" in config '[^']*' on \S+: "), ": "),
    (re.compile(r"^config '[^']*' breaks its aggregate budgets over "), "aggregate over "),
    (re.compile(r", case_sensitive=False"), ""),
]


def first_line(text: str) -> str:
    """The first non-empty line of a failure report, one line, without the parts the test
    name repeats (config, prompt), for the comment."""
    for line in text.splitlines():
        if line.strip():
            short = " ".join(line.split())
            for pattern, repl in _BOILERPLATE:
                short = pattern.sub(repl, short)
            return short
    return ""

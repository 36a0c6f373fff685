"""The accepted state of each config, applied to this run's outputs.

Each config's accepted record (``snapshots/accepted/<config>.toml``) holds the outputs and
failures that were accepted for it. This part checks that a record still holds (same model,
same config), replays this machine's outputs against it (see
:mod:`shrinktests.accepted.replay`), and turns this run's outputs into a new record.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

from shrinktests.accepted.record import (
    FOLDER,
    AcceptedOutput,
    AcceptedRecord,
    load_folder,
    low_margins,
    prompt_key,
)
from shrinktests.accepted.replay import Replay, replay
from shrinktests.core.generation import Generation
from shrinktests.run.inputs import Case, RunInputs
from shrinktests.run.portable import machine_key, weights_key
from shrinktests.spec.files import Suite


class AcceptedState:
    def __init__(self, inputs: RunInputs,
                 records: Mapping[str, AcceptedRecord] | None = None) -> None:
        self.inputs = inputs
        self.options = inputs.options
        #: every config's accepted record as stored (``snapshots/accepted/``), read and
        #: validated when the run starts: a broken file is an error before any model loads
        self.records = (load_folder(self.options.snapshot_dir / FOLDER) if records is None
                        else records)
        self._records: dict[str, AcceptedRecord | None] = {}
        #: how each (config, case id) related to its accepted output
        self.replays: dict[str, dict[str, Replay]] = defaultdict(dict)
        #: what this machine's own output would have got where a near-tie flipped it
        self.flip_verdicts: dict[tuple[str, str], list[str]] = defaultdict(list)
        #: why a config's accepted record was not applied (recorded for another model/config)
        self.stale_records: dict[str, str] = {}
        #: outputs recorded for other prompts or decoding settings, per config
        self.stale_outputs: dict[str, int] = defaultdict(int)
        #: configs whose record was made on another CPU, and why that matters (see
        #: :meth:`foreign_cpu`)
        self.foreign: dict[str, str] = {}

    def record(self, name: str) -> AcceptedRecord | None:
        """The config's accepted record when it holds for this model and config; a stale one
        is noted in :attr:`stale_records` and not applied."""
        if name not in self._records:
            record = self.records.get(name)
            if record is not None and not self.options.accept:
                source = self.inputs.source
                reason = record.stale_reason(source.fingerprint, source.label,
                                             self.inputs.record_fingerprint(name),
                                             self.inputs.configs.get(name).params())
                if reason is not None:
                    self.stale_records[name] = reason
                    record = None
            self._records[name] = record
        return self._records[name]

    def foreign_cpu(self, name: str) -> str | None:
        """Why the config's per-prompt verdicts cannot be replayed here, or None: its record
        holds for another machine (:func:`~shrinktests.run.portable.weights_key`:
        weights calibrated on another one where they are not pinned, or another family of
        int8 kernels). The config is then another model here, not the recorded one at a
        near-tie: its outputs are judged live, its per-prompt checks are advisory (non-strict
        xfails) and its aggregate tests gate."""
        record = self.record(name)
        if record is None or record.cpu is None:
            return None
        here = (weights_key(self.inputs.configs.get(name), self.inputs.device)
                or machine_key(self.inputs.device))
        if record.cpu == here:
            return None
        if name not in self.foreign:
            self.foreign[name] = (f"outputs computed here for {here}, its accepted record "
                                  f"made for {record.cpu}")
        return self.foreign[name]

    def aggregate_scope(self, name: str) -> str | None:
        """Why the config's recorded aggregate verdicts are another measurement than this
        run's, or None: an aggregate is over every prompt of the run, so one recorded over
        other prompts (all suites, where this run takes one) may come out either way here."""
        record = self.record(name)
        if record is None:
            return None
        here = {Case(suite, prompt).id for suite in self.options.suites
                for prompt in suite.prompts}
        if set(record.outputs) == here:
            return None
        return f"recorded over {len(record.outputs)} prompts, this run aggregates {len(here)}"

    def failures(self, name: str) -> Mapping[str, str]:
        record = self.record(name)
        return record.failures if record is not None else {}

    def judge(self, name: str, suite: Suite, live: Sequence[Generation]) -> list[Generation]:
        """The outputs ``name`` is judged on: ``live``, except where one leaves the accepted
        output at a near-tie (a machine-dependent flip); there the accepted output."""
        record = self.record(name)
        decoding = self.inputs.settings(suite).key()
        own = self.inputs.configs.get(name).replay_epsilon
        epsilon = self.inputs.configs.replay_epsilon if own is None else own
        judged = []
        for prompt, gen in zip(suite.prompts, live, strict=True):
            case_id = Case(suite, prompt).id
            acc = record.outputs.get(case_id) if record and not self.foreign_cpu(name) else None
            if acc is not None and acc.prompt != prompt_key(gen.prompt_ids, decoding):
                self.stale_outputs[name] += 1
                acc = None
            r = replay(acc, gen, epsilon)
            self.replays[name][case_id] = r
            judged.append(acc.generation(gen.prompt_ids) if acc and r.judges_accepted else gen)
        return judged

    def new_record(self, name: str, margins_below: float,
                   generated: Mapping[str, Sequence[Generation]]) -> AcceptedRecord:
        """A record of ``name`` from this run's live outputs (suite name -> generations)."""
        outputs = {}
        for suite in self.options.suites:
            gens = generated.get(suite.name)
            if gens is None:
                continue
            decoding = self.inputs.settings(suite).key()
            for prompt, gen in zip(suite.prompts, gens, strict=True):
                outputs[Case(suite, prompt).id] = AcceptedOutput(
                    prompt_key(gen.prompt_ids, decoding), tuple(gen.token_ids), gen.text,
                    gen.finished, low_margins(gen, margins_below))
        source = self.inputs.source
        return AcceptedRecord(
            config=name, model=source.fingerprint, model_label=source.label,
            fingerprint=self.inputs.record_fingerprint(name),
            steps=tuple(self.inputs.configs.get(name).params()),
            margins_below=margins_below, failures={}, outputs=outputs,
            cpu=weights_key(self.inputs.configs.get(name), self.inputs.device))

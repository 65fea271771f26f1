"""The alarms a run raised, as every page shows them: one source for the Policy, Runs, Workshop and frontier pages.

A policy run checks its health after every step and after every probe of the policy (``alarms.check``), logs each
alarm once to events.log (``log_line``, with its code) and lists the codes in status.json's ``alarms``. A page must
not recheck with other data and say "No health alarm" about a run that raised one: ``run_alarms`` gives every alarm
the run raised (with the message it logged) and every alarm a check finds now, each saying whether it still holds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Sequence

from rlhf_engine.lab.alarms import ALARM_CODES, Alarm, check

# Each alarm in a few words (a table's column, a line of the room's frontier).
ALARM_TITLES = {
    "nan": "NaN or infinite numbers", "kl_negative": "negative KL", "kl_runaway": "KL runaway",
    "reward_hacking": "reward hacking", "entropy_collapse": "entropy collapse", "clipfrac_high": "high clip fraction",
    "value_loss_diverging": "value loss diverging", "length_cap": "answers cut at the length cap",
    "zero_std_groups": "groups that teach nothing", "length_drift": "answer length drift",
}


@dataclass(frozen=True)
class RunAlarm:
    """One alarm of a run as a page shows it: what the run raised, checked again now."""

    alarm: Alarm              # the latest check's alarm where it still holds, else the one the run logged
    holds: bool               # whether the latest check (the run's metrics and probes now) still finds it
    raised_step: int | None   # step at which the run logged it; None: found by the latest check, not logged yet


def log_line(alarm: Alarm) -> str:
    """The events.log line of a raised alarm ("alarm at step 21 [reward_hacking]: ... Suggestion: ..."), which
    ``logged_alarms`` reads back (the CLI's follow prints it as it is)."""
    return f"alarm at step {alarm.step} [{alarm.code}]: {alarm.message} Suggestion: {alarm.suggestion}"


_LOGGED = re.compile(r"alarm at step (\d+)(?: \[(\w+)\])?: (.*?)(?: Suggestion: (.*))?$")


def logged_alarms(events: str) -> list[Alarm]:
    """The alarms an events.log holds, in the order logged. Lines logged before the code was written in them
    have the code "" (their message is what the run said; which alarm it was is not recorded)."""
    found = []
    for line in (events or "").splitlines():
        _, _, text = line.partition(" ")
        match = _LOGGED.match(text)
        if match is None:
            continue
        step, code, message, suggestion = match.groups()
        code = code if code in ALARM_CODES else ""
        found.append(Alarm(code, int(step), "error" if code == "nan" else "warning", message, suggestion or ""))
    return found


def run_alarms(metrics: Sequence[dict], config: Mapping | None = None, status: Mapping | None = None,
               probes: Sequence[Mapping] | None = None, events: str = "") -> list[RunAlarm]:
    """Every alarm of a run, the one source a page shows: those it raised (status.json's ``alarms``, with the
    message events.log holds) and those ``check`` finds now, each once, errors first, then ALARM_CODES order.

    An alarm that holds now shows the latest numbers and the step it was first raised at; one that no longer
    holds shows what the run logged then (a page must not say "no alarm" about a run that raised one). Lines
    logged without their code (older runs) are shown as they are when a raised code has no coded line, unless
    the latest check finds every raised code again (then they would say the same twice)."""
    now = {alarm.code: alarm for alarm in check(metrics, config, status, probes)}
    logged = logged_alarms(events)
    first = {}
    for alarm in logged:
        first.setdefault(alarm.code, alarm.step)
    last_logged = {alarm.code: alarm for alarm in logged if alarm.code}
    raised = {code for code in (status or {}).get("alarms", []) if code in ALARM_CODES} | set(last_logged)
    shown = [RunAlarm(alarm, True, first.get(code)) for code, alarm in now.items()]
    shown += [RunAlarm(last_logged[code], False, last_logged[code].step)
              for code in raised if code not in now and code in last_logged]
    if any(code not in now and code not in last_logged for code in raised):
        shown += [RunAlarm(alarm, False, alarm.step) for alarm in logged if not alarm.code]
    order = {code: i for i, code in enumerate(ALARM_CODES + ("",))}
    return sorted(shown, key=lambda item: (item.alarm.severity != "error", order[item.alarm.code],
                                           item.alarm.step))


def alarms_of_run(run, metrics: Sequence[dict] | None = None, status: Mapping | None = None) -> list[RunAlarm]:
    """``run_alarms`` of a run folder (a ``RunFolder``: its metrics, config, status, probes and events.log;
    ``metrics`` and ``status`` when the caller has read them already). A run that answers no probe prompts (no
    probe_prompts.json) has its reward hacking judged on its training batches, as it did when it ran."""
    metrics = run.metrics() if metrics is None else metrics
    status = run.status() if status is None else status
    try:
        config = run.config().get("config", {})
    except (OSError, ValueError):
        config = {}
    probes = run.probes()
    if not probes and not (run.path / "probe_prompts.json").is_file():
        probes = None
    return run_alarms(metrics, config, status, probes, run.events())


def alarm_titles(codes: Sequence[str]) -> str:
    """Raised alarm codes in a few words each ("reward hacking, KL runaway"), in ALARM_CODES order; "" for none."""
    known = [code for code in ALARM_CODES if code in set(codes or ())]
    return ", ".join(ALARM_TITLES[code] for code in known)

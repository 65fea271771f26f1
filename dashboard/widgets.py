"""Widgets shared by pages: config knobs with their documentation, run pickers and status lines."""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import streamlit as st

from rlhf_engine.config import (
    FIELD_CHOICES,
    PPOConfig,
    bundled_policy_defaults,
    field_defaults,
    field_help,
)
from rlhf_engine.methods import registry
from rlhf_engine.runs.job import describe_error
from rlhf_engine.runs.runfolder import RunFolder

STATE_ICONS = {"queued": ":material/schedule:", "running": ":material/play_circle:",
               "completed": ":material/check_circle:", "stopped": ":material/stop_circle:",
               "failed": ":material/error:", "interrupted": ":material/warning:", "unknown": ":material/help:"}


MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")


def md(text) -> str:
    """User, model or file text made safe to place inside Markdown: every special character escaped,
    so it shows as typed (no links, images, HTML or formatting)."""
    return MARKDOWN_SPECIAL.sub(r"\\\1", str(text))


@contextlib.contextmanager
def engine_errors(action: str) -> Iterator[None]:
    """Show an engine error as one plain message on the page instead of a traceback."""
    try:
        yield
    except Exception as err:  # noqa: BLE001 - any failure of the engine becomes a message
        st.error(f"{action} failed: {md(describe_error(err))}")


def flash(message: str) -> None:
    """Rerun the page and show a success message at the top once (after an action changed what it shows)."""
    st.session_state["flash"] = message
    st.rerun()


def show_flash() -> None:
    message = st.session_state.pop("flash", None)
    if message:
        st.success(message)


def knob_help(cls: type, name: str) -> str:
    """A config field's one-line comment and its default, as a widget's help text."""
    return f"{field_help(cls).get(name, '')}. Default: {field_defaults(cls)[name]!r}."


def knob(cls: type, name: str, key_prefix: str, value=None, **kwargs):
    """One widget for a config field, its help text and literature default taken from the dataclass.

    The widget kind follows the default's type: checkbox (bool), number input (int/float) or text.
    """
    default = field_defaults(cls)[name]
    value = default if value is None else value
    help_text = knob_help(cls, name)
    label = kwargs.pop("label", name)
    key = f"{key_prefix}.{name}"
    if isinstance(default, bool):
        return st.checkbox(label, help=help_text, key=key, **first_value(key, bool(value)), **kwargs)
    if isinstance(default, int):
        return int(st.number_input(label, step=1, help=help_text, key=key, **first_value(key, int(value)), **kwargs))
    if isinstance(default, float):
        return float(st.number_input(label, format="%g", help=help_text, key=key, **first_value(key, float(value)),
                                     **kwargs))
    return st.text_input(label, help=help_text, key=key, **first_value(key, str(value)), **kwargs)


def first_value(key: str, value, argument: str = "value") -> dict:
    """A widget's initial-value argument for its first draw; none once the session holds its value (the
    widget's own, or a preset's from ``fill_knobs``: passing both makes Streamlit warn)."""
    return {} if key in st.session_state else {argument: value}


def fill_knobs(key_prefix: str, values: dict) -> None:
    """Set the widgets of ``knob``/``choice_knob`` (field name -> value) before they are drawn: a preset.

    Call from a button's on_click callback, which runs before the page draws its widgets.
    """
    for name, value in values.items():
        st.session_state[f"{key_prefix}.{name}"] = value


def choice_knob(cls: type, name: str, options: Sequence[str], key_prefix: str, label: str | None = None):
    """A selectbox for a config field with fixed choices."""
    default = field_defaults(cls)[name]
    key = f"{key_prefix}.{name}"
    return st.selectbox(label or name, list(options), help=knob_help(cls, name), key=key,
                        **first_value(key, list(options).index(default), "index"))


def status_line(run: RunFolder, status: dict | None = None) -> str:
    """'ppo-… — running, step 3/30' (with a state icon) and the error of a failed run."""
    status = run.status() if status is None else status
    state = status.get("state", "unknown")
    step = f"step {status.get('step', 0)}/{status.get('total_steps', '?')}"
    text = f"{STATE_ICONS.get(state, '')} **{md(run.id)}** — {state}, {step}"
    if status.get("error"):
        text += f" — {md(status['error'])}"
    return text


def rerun_when_finished(run: RunFolder) -> None:
    """From inside a live fragment: rerun the whole page once when a run it watched stops being live, so
    the parts outside the fragment (evaluation, Resume, the refresh itself) catch up."""
    from .state import is_live

    key = f"watched_live.{run.path}"
    before, now = st.session_state.get(key), is_live(run)
    st.session_state[key] = now
    if before and not now:
        st.rerun(scope="app")


def run_header(run: RunFolder, key: str) -> dict:
    """Inside a live fragment: the run's state line, progress bar, Stop/Resume and its error; returns status."""
    status = run.status()
    rerun_when_finished(run)
    st.markdown(status_line(run, status))
    st.progress(min(int(status.get("step", 0)) / max(int(status.get("total_steps", 1)), 1), 1.0))
    job_controls(run, key)
    if status.get("state") == "failed":
        st.error(f"The run failed: {md(status.get('error'))}. The full log is in `{run.path / 'events.log'}`.")
    return status


def live_header(run: RunFolder, key: str, extra=None) -> dict:
    """The part of a run's view that refreshes every second while the run is live: state, progress,
    Stop/Resume (and ``extra(status)``). When the run has new data the whole page reruns once, so the
    charts and tables below are redrawn only then: redrawing seven charts every second cost the CPU
    that training needs. Returns the status read for this page run."""
    from .state import data_signature, refresh_interval

    drawn = f"drawn.{run.path}"
    st.session_state[drawn] = data_signature(run)  # what the page below this header is drawn from

    def refresh() -> None:
        status = run_header(run, key)
        if extra is not None:
            extra(status)
        if st.session_state.get(drawn) != data_signature(run):
            st.rerun(scope="app")

    st.fragment(refresh, run_every=refresh_interval(run))()
    from rlhf_engine.runs.trackers import reported_commands

    for name, command in reported_commands(run):  # the run's settings: read once per page run, not each second
        st.caption(f"Metrics mirrored to {name}: `{command}`")
    return run.status()


def run_picker(runs: Sequence[RunFolder], label: str, key: str,
               describe: Callable[[str], str] | None = None) -> RunFolder | None:
    """A selectbox of run ids (newest first, the run this session last started on top); None if there are
    none. ``describe``: how an id is shown (default: as it is). The state is shown by status_line."""
    if not runs:
        return None
    started = st.session_state.get(f"{key}.started")
    by_id = {r.id: r for r in sorted(runs, key=lambda r: r.id != started)}
    return by_id.get(st.selectbox(label, list(by_id), key=key, format_func=describe or str))


def started_already(name: str) -> bool:
    """Whether this session has already started a run (or sweep) called ``name``, saying so on the page.

    A double click on Start sends the second click with the form as it was, so it names the run the first
    click started: that click starts nothing. (Another session naming the same run gets the engine's
    'already holds a run' error: the run folder is claimed atomically.)
    """
    if name.strip() in st.session_state.get("started_names", set()):
        st.info(f"{md(name.strip())} is already started (a second click on Start starts nothing).")
        return True
    return False


def mark_started(name: str) -> None:
    st.session_state.setdefault("started_names", set()).add(name)


def submit_job(job, picker_key: str, name_key: str) -> None:
    """Queue a prepared job, show it in the run picker, give the next run a new name, and say what happened."""
    from .state import submit_run

    job = submit_run(job.run)  # its own process: see ProcessJob
    mark_started(job.run.id)
    st.session_state[f"{picker_key}.started"] = job.run.id
    st.session_state[picker_key] = job.run.id  # the picker shows the new run (it is drawn after the form)
    st.session_state.pop(name_key, None)
    from .room import current_room

    if queue_position(job) == 0:
        flash(f"Started {job.run.id}.")
    elif current_room() is None:
        flash(f"Queued {job.run.id}: it starts when the job before it ends (one heavy job at a time).")
    else:
        flash(f"Queued {job.run.id}: {wait_phrase(job)}.")


def job_controls(run: RunFolder, key: str) -> None:
    """Stop (queued or running here) or Resume (stopped, failed or interrupted) for one run."""
    from rlhf_engine.runs.resume import prepare_resume

    from .state import job_queue, may_stop, stop_job

    state = run.status().get("state")
    job = job_queue().find(run.path)
    if job is not None and state in ("queued", "running"):
        if not may_stop(job):
            st.caption("Only the run's owner or the teacher can stop it.")
        elif st.button("Stop", key=f"{key}.stop", help="Stop after the current step; a checkpoint is kept"):
            stop_job(job)
            st.rerun()
    elif job is not None:
        if state != "completed":  # a completed run's process is only writing its end: nothing to say or do
            st.caption("The job is ending…")
    elif state in ("stopped", "failed", "interrupted"):
        if st.button("Resume", key=f"{key}.resume", help="Continue from the last checkpoint"):
            with engine_errors("Resume"):
                submit_job(prepare_resume(run.path), key, f"{key}.name")


def queue_position(job) -> int:
    """0 if the job is running (or already done), n if n jobs are ahead of it."""
    from .state import job_queue

    return max(job_queue().position(job), 0)


def workspace_download(ws) -> None:
    """One button: the whole workspace (pairs, runs, exports) as one zip file, made when clicked."""
    import tempfile

    from rlhf_engine.runs.workspace import archive

    def zipped() -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            return archive(ws, Path(tmp) / "workspace.zip").read_bytes()

    st.download_button("Download my workspace (.zip)", zipped, file_name=f"{ws.root.name}.zip",
                       mime="application/zip", help="Your model choice, pairs, runs and exports in one file")


def wait_phrase(job) -> str:
    """When a waiting job starts: its place in the queue and, once a job has ended, a time estimate."""
    from .state import job_queue

    queue = job_queue()
    place = queue.position(job)
    if place <= 0:
        return "running"
    estimate = queue.estimate_wait_s(job)
    about = f", about {max(1, round(estimate / 60))} min" if estimate is not None else ""
    return f"number {place} in the queue{about}"


def queue_notice() -> None:
    """Say plainly what the device is busy with, if anything: alone, the queue; in a room, this participant's
    jobs with their places, the room's slots and the cap on waiting jobs."""
    from .room import current_room, identity
    from .state import job_queue

    queue = job_queue()
    if current_room() is None:
        jobs = queue.jobs()
        if jobs:
            waiting = f"; {len(jobs) - 1} waiting" if len(jobs) > 1 else ""
            st.caption(f"Device busy with **{md(jobs[0].run.id)}**{waiting}. New jobs wait their turn "
                       "(one at a time).")
        return
    who = identity()
    mine = queue.jobs(owner=who.pid)
    cap = f"; at most {queue.cap} of your jobs wait at once" if queue.cap else ""
    st.caption(f"The room runs {queue.slots} job(s) at once, taking participants in turn{cap}.")
    for job in mine:
        st.caption(f"**{md(job.run.id)}**: {wait_phrase(job)}.")


# Each method's form: its groups, each a heading and its columns, each column the (config field, label) pairs
# drawn in it; then the popover's. PPO's is shared by the policy and sweep pages (a sweep's runs take its knobs).
PPO_FORM = (
    ("KL penalty", (
        (("kl_coef", "β (KL coefficient)"),),
        (("adaptive_kl", "adaptive β"),),
        (("kl_target", "KL target (nats)"), ("kl_horizon", "adaptive horizon (samples)")),
        (("kl_estimator", "KL estimator"),),
    )),
    ("Rollouts", (
        (("steps", "PPO steps"),),
        (("batch_size", "batch (prompts per step)"),),
        (("response_length", "response length (tokens)"),),
        (("temperature", "temperature"),),
    )),
    ("Update", (
        (("ppo_epochs", "PPO epochs"), ("num_mini_batches", "minibatches")),
        (("cliprange", "policy clip range"), ("cliprange_value", "value clip range")),
        (("learning_rate", "learning rate"), ("lr_schedule", "lr schedule")),
        (("vf_coef", "value loss weight"), ("lam", "GAE λ"), ("value_model", "value model")),
    )),
)
# What every method's popover holds (PPO's adds γ and its whitening switches).
COMMON_MORE = (
    ("normalize_reward", "normalise RM scores"), ("missing_eos_penalty", "missing-EOS penalty (score units)"),
    ("max_grad_norm", "gradient clip"), ("checkpoint_every", "checkpoint every (steps)"),
    ("probe_every", "probe answers every (steps)"), ("probe_prompts", "held-out probe prompts"),
    ("probe_subset", "prompts of the probes before the last (0 = all)"),
    ("reference_probe_samples", "reference answers per probe prompt"), ("seed", "seed"),
    ("report_to", "mirror metrics to"),
)
PPO_FORM_MORE = ("More: γ, implementation details, seed", (
    ("gamma", "γ (discount)"), ("whiten_rewards", "whiten rewards"), ("whiten_advantages", "whiten advantages"),
    *COMMON_MORE,
))
GROUP_ROLLOUTS = ("Rollouts", (
    (("steps", "steps"),),
    (("batch_size", "batch (answers per step)"), ("group_size", "answers per prompt (group)")),
    (("response_length", "response length (tokens)"),),
    (("temperature", "temperature"),),
))
GRPO_FORM = (
    ("KL penalty", (
        (("kl_coef", "β (KL coefficient)"),),
        (("kl_in", "KL in the loss or the reward"),),
        (("kl_estimator", "KL estimator (plotted; in the reward)"),),
    )),
    GROUP_ROLLOUTS,
    ("Update", (
        (("loss_type", "loss (GRPO or Dr. GRPO)"),),
        (("epochs", "epochs per rollout"), ("cliprange", "clip range ε")),
        (("learning_rate", "learning rate"), ("lr_schedule", "lr schedule")),
    )),
)
RLOO_FORM = (
    ("KL penalty", (
        (("kl_coef", "β (KL coefficient)"),),
        (("kl_estimator", "KL estimator"),),
    )),
    GROUP_ROLLOUTS,
    ("Update", (
        (("epochs", "epochs per rollout (1 = REINFORCE)"), ("cliprange", "clip range ε (epochs > 1)")),
        (("learning_rate", "learning rate"),),
        (("lr_schedule", "lr schedule"),),
    )),
)
GROUP_FORM_MORE = ("More: implementation details, seed",
                   (*COMMON_MORE, ("answers_per_pass", "answers per pass (memory)")))
DPO_FORM = (
    ("Objective", (
        (("kl_coef", "β (KL coefficient of the objective)"),),
    )),
    ("Training on pairs", (
        (("steps", "steps"),),
        (("batch_size", "batch (pairs per step)"),),
        (("learning_rate", "learning rate"), ("lr_schedule", "lr schedule")),
        (("max_length", "max tokens (prompt + answer)"),),
    )),
    ("Held-out probe answers (where DPO's KL and scores are measured)", (
        (("probe_every", "probe answers every (steps)"),),
        (("probe_prompts", "held-out probe prompts"),),
        (("probe_subset", "prompts of the probes before the last (0 = all)"),),
        (("response_length", "answer length (tokens)"),),
        (("temperature", "temperature"),),
    )),
)
DPO_FORM_MORE = ("More: implementation details, seed", (
    ("kl_estimator", "KL estimator (of the probes' KL)"), ("normalize_reward", "normalise RM scores"),
    ("reference_probe_samples", "reference answers per probe prompt"), ("max_grad_norm", "gradient clip"),
    ("pairs_per_pass", "pairs per pass (memory)"), ("checkpoint_every", "checkpoint every (steps)"), ("seed", "seed"),
    ("report_to", "mirror metrics to"),
))
# The hand-made layouts of the built-in methods: method -> (its form, its popover). A method without one (one
# registered from outside: registry.EXTRA_METHODS_ENV) gets a form generated from its config (``generated_form``).
METHOD_FORMS = {
    "ppo": (PPO_FORM, PPO_FORM_MORE),
    "grpo": (GRPO_FORM, GROUP_FORM_MORE),
    "rloo": (RLOO_FORM, GROUP_FORM_MORE),
    "dpo": (DPO_FORM, DPO_FORM_MORE),
}
GENERATED_COLUMNS = 3  # columns of a generated form
EOS_PENALTY_DEFAULT = 1.0  # the penalty the form offers once its checkbox is ticked (score units)


def method_form(method: str) -> tuple[type, tuple, tuple | None]:
    """(config class, form, popover or None) of a method of the registry: its hand-made layout
    (``METHOD_FORMS``), or one generated from its config's fields."""
    cls = registry.get(method).config
    if method in METHOD_FORMS:
        return (cls, *METHOD_FORMS[method])
    return cls, generated_form(cls), None


def generated_form(cls: type) -> tuple:
    """A form of every field of a config class but the model, in their order, in GENERATED_COLUMNS columns under
    one heading; each labelled by its name and the start of its comment (``field_help``: all of it is the help)."""
    helps = field_help(cls)
    knobs = [(f.name, _generated_label(f.name, helps.get(f.name, ""))) for f in dataclasses.fields(cls)
             if f.name != "model"]
    per_column = -(-len(knobs) // GENERATED_COLUMNS)
    columns = tuple(tuple(knobs[i:i + per_column]) for i in range(0, len(knobs), per_column))
    return (("Settings", columns),)


def _generated_label(name: str, help_text: str) -> str:
    """"kl_coef — beta, the KL penalty weight": the name and the comment up to its first bracket or colon."""
    short = re.split(r" \(|: |; ", help_text, maxsplit=1)[0].strip()
    return f"{name} — {short}" if short else name


def form_fields(method: str = "ppo") -> list[tuple[str, str]]:
    """Every (field, label) of a method's form, in the order drawn."""
    _, form, more = method_form(method)
    grouped = [knob for _, columns in form for column in columns for knob in column]
    return grouped + (list(more[1]) if more else [])


def policy_knobs(key_prefix: str, method: str = "ppo", model=None) -> dict:
    """A method's form (``method_form``): every knob of its config but the model; returns its config's keyword
    arguments. Call inside a form; ``key_prefix`` is the page's (one per method: their defaults differ). ``model``:
    the policy's ModelConfig, whose own starting values (``config.bundled_policy_defaults``) the form starts from."""
    cls, form, more = method_form(method)
    fields = {}
    for heading, columns in form:
        st.markdown(f"**{heading}**")
        for column, knobs in zip(st.columns(len(columns)), columns):
            with column:
                for name, label in knobs:
                    fields[name] = _policy_knob(cls, name, label, key_prefix, model)
    if more:
        title, knobs = more
        with st.popover(title):
            for name, label in knobs:
                fields[name] = _policy_knob(cls, name, label, key_prefix, model)
    return fields


def _policy_knob(cls: type, name: str, label: str, key_prefix: str, model=None):
    if name == "report_to":
        return tracker_knob(cls, key_prefix, label)
    if name in FIELD_CHOICES:
        return choice_knob(cls, name, FIELD_CHOICES[name], key_prefix, label=label)
    if name == "missing_eos_penalty":  # None (off) or a number: a checkbox and the number
        start = bundled_policy_defaults(model, cls).get(name) if model is not None else None
        used = st.checkbox("penalise answers with no EOS", key=f"{key_prefix}.use_eos_penalty",
                           help="Subtract a fixed amount from the score of answers cut at the cap"
                                + (" (on for the bundled model: its answers to open prompts often run past the cap)"
                                   if start is not None else ""),
                           **first_value(f"{key_prefix}.use_eos_penalty", start is not None))
        penalty = st.number_input(label, key=f"{key_prefix}.eos_penalty",
                                  **first_value(f"{key_prefix}.eos_penalty", start or EOS_PENALTY_DEFAULT))
        return penalty if used else None
    if field_defaults(cls)[name] is None:  # another field that may be off (None): in a generated form
        return _optional_knob(cls, name, label, key_prefix)
    return knob(cls, name, key_prefix, label=label)


def _optional_knob(cls: type, name: str, label: str, key_prefix: str):
    """A field whose default is None (off) in a generated form: a text box, empty for None; a number typed in is
    read as one."""
    key = f"{key_prefix}.{name}"
    text = st.text_input(label, help=f"{knob_help(cls, name)} Empty: none.", key=key, **first_value(key, ""))
    text = text.strip()
    if not text:
        return None
    for number in (int, float):
        try:
            return number(text)
        except ValueError:
            pass
    return text


def tracker_knob(cls: type, key_prefix: str, label: str = "mirror metrics to") -> str:
    """``report_to`` as a choice of trackers; returns the field's text ("none" or "tensorboard,wandb")."""
    from rlhf_engine.runs.trackers import TRACKERS

    chosen = st.multiselect(label, TRACKERS, key=f"{key_prefix}.report_to",
                            help=f"{field_help(cls)['report_to']}, offline or local. The run folder stays the "
                                 "record; the run's view shows the command that opens each.")
    return ",".join(chosen) or "none"


def fill_ppo_knobs(key_prefix: str, config: PPOConfig) -> None:
    """Set every PPO ``policy_knobs`` widget to a config's value (a preset; the trackers stay as chosen); call
    from a button's on_click."""
    values = {name: getattr(config, name) for name, _ in form_fields("ppo")
              if name not in ("missing_eos_penalty", "report_to")}
    values["use_eos_penalty"] = config.missing_eos_penalty is not None
    if config.missing_eos_penalty is not None:
        values["eos_penalty"] = float(config.missing_eos_penalty)
    fill_knobs(key_prefix, values)


ALARM_HELP = ("Checked after every step on the run's metrics; each comes with what to try. "
              "They are rules of thumb, not proof: read the plots below.")


def health_alarms(rows: list[dict], config: dict, status: dict) -> None:
    """The run's health alarms in plain language, each with a suggestion (none: a quiet caption)."""
    from rlhf_engine.lab.alarms import check

    alarms = check(rows, config, status)
    if not alarms and rows:
        st.caption(":material/health_and_safety: No health alarm. " + ALARM_HELP)
    for alarm in alarms:
        show = st.error if alarm.severity == "error" else st.warning
        show(f"**{md(alarm.message)}**  \n{md(alarm.suggestion)}", icon=":material/warning:")


RUN_ALARM_HELP = ("Checked after every step on the run's metrics, and on its held-out probes where it has them; "
                  "each comes with what to try. They are rules of thumb, not proof: read the plots below.")


def alarm_notice(run: RunFolder, rows: list[dict] | None = None, status: dict | None = None,
                 all_clear: bool = False) -> None:
    """Every alarm the run raised or the latest check finds (``alarms.alarms_of_run``: one source for every page),
    one st.warning each (st.error for NaN) with its message and suggestion; nothing when there is none, or with
    ``all_clear`` a quiet caption saying so once the run has a step. ``rows``, ``status``: already read."""
    from rlhf_engine.lab.raised_alarms import alarms_of_run

    rows = run.metrics() if rows is None else rows
    found = alarms_of_run(run, rows, status)
    if not found and all_clear and rows:
        st.caption(":material/health_and_safety: No health alarm. " + RUN_ALARM_HELP)
    last_step = rows[-1].get("step") if rows else None
    for item in found:
        show = st.error if item.alarm.severity == "error" else st.warning
        show(alarm_text(item, last_step), icon=":material/warning:")


def alarm_text(item, last_step: int | None) -> str:
    """One alarm as a page shows it: its message and suggestion, with when the run raised it and, for one the
    latest check no longer finds, that it no longer holds (the run said it then; the numbers are from then)."""
    alarm = item.alarm
    text = f"**{md(alarm.message)}**  \n{md(alarm.suggestion)}"
    if not item.holds:
        now = f" at step {last_step}" if last_step is not None else ""
        return f"Raised at step {item.raised_step}; the latest check{now} no longer finds it. " + text
    if item.raised_step is not None and item.raised_step != alarm.step:
        text += f"  \n*First raised at step {item.raised_step}.*"
    return text


def token_view(samples: list[dict], key: str) -> None:
    """Pick a logged sample; draw its tokens with their KL to the reference, value and advantage."""
    from rlhf_engine.lab.figures import token_heatmap

    with_tokens = [s for s in samples if s.get("tokens")]
    if not with_tokens:
        return
    if "advantage" in with_tokens[-1]:  # a group method: one advantage per answer
        st.markdown("**Token view**: where in an answer the policy left the reference (KL). The answer's "
                    "advantage, against the other answers to its prompt, pushes all its tokens up or down alike.")
    else:
        st.markdown("**Token view**: where in an answer the policy left the reference (KL), what the value "
                    "head expected (value) and which tokens PPO pushes up or down (advantage).")
    steps = sorted({s["step"] for s in with_tokens})
    col_step, col_sample = st.columns([1, 3])
    step = col_step.selectbox("step", steps[::-1], key=f"{key}.step")
    at_step = [s for s in with_tokens if s["step"] == step]
    index = col_sample.selectbox("sample", range(len(at_step)), key=f"{key}.sample",
                                 format_func=lambda i: f"{i + 1}: {at_step[i]['response'][:80]}")
    sample = at_step[min(index, len(at_step) - 1)]
    st.plotly_chart(token_heatmap(sample), key=f"{key}.heatmap")


def export_panel(runs: Sequence[RunFolder]) -> None:
    """Export a policy or reward-model run as ``python -m rlhf_engine export`` does, into the run's exports/
    folder, and offer it as a zip download."""
    from rlhf_engine.runs.export import ExportError, default_destination, export_run, zip_export

    picked = run_picker(runs, "Run to export", "runs.export")
    if picked is None:
        st.caption("Policy and reward-model runs can be exported once they have trained a step.")
        return
    adapter_only = st.checkbox("The PEFT adapter alone (for PeftModel.from_pretrained on the base)",
                               key="runs.export.adapter")
    try:
        target = default_destination(picked.path, adapter_only)
    except ExportError as err:
        st.info(str(err))
        return
    loads_as = "AutoModelForSequenceClassification" if picked.config().get("kind") == "reward_model" else \
        "AutoModelForCausalLM"
    what = "the adapter" if adapter_only else f"a merged model (for {loads_as})"
    st.caption(f"Writes {what} with its tokenizer and a model card to `{target}`; the same as "
               f"`python -m rlhf_engine export {picked.path} --out {target}{' --adapter' if adapter_only else ''}`.")
    if not target.is_dir() and st.button("Export", key="runs.export.go"):
        try:
            with st.spinner("Merging and writing the model…"):
                export_run(picked.path, target, adapter_only)
                zip_export(target)
        except (ExportError, ValueError, OSError) as err:
            st.error(f"Export failed: {md(err)}")
            return
        st.rerun()  # drawn again without the button: the export is there to download
    if target.is_dir():
        archive = zip_export(target)
        st.success(f"Exported to `{target}` ({archive.stat().st_size / 2**20:.0f} MiB zipped).")
        with open(archive, "rb") as data:
            st.download_button(f"Download {archive.name}", data, file_name=f"{picked.id}-{archive.name}",
                               mime="application/zip", key="runs.export.download")

"""Policy training, by any method of the registry (PPO, GRPO, RLOO, DPO, and those registered from outside): every
knob with its meaning and literature default; Start, Stop, Resume; live plots (TRL's metric names for each method),
samples and held-out probes."""

import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard.lab import report_button
from dashboard.state import metric_figures, require_app_shell, workspace
from dashboard.widgets import (
    alarm_notice,
    engine_errors,
    live_header,
    md,
    policy_knobs,
    queue_notice,
    run_picker,
    show_flash,
    started_already,
    submit_job,
    token_view,
)
from rlhf_engine.lab.figures import logs_kl_estimators, policy_panels, probe_figure
from rlhf_engine.lab.noise import is_clear
from rlhf_engine.lab.styles import run_facts, run_styles
from rlhf_engine.lab.sweep import probe_summary
from rlhf_engine.methods import registry
from rlhf_engine.runs.policy_job import prepare_policy_job
from rlhf_engine.runs.reward_job import REWARD_KIND
from rlhf_engine.runs.runfolder import new_run_name, safe_name

require_app_shell()

SHOWN_PROBES = 3  # probe prompts shown side by side (all of them count in the summary)
RM_PAIRS, STORE_PAIRS = "the reward model's pairs", "the pair store"  # what a method that learns from pairs uses
METHODS = registry.methods()  # every method: its title, its words above the form (summary), its config
ws = workspace()
st.title("Policy training: " + ", ".join(m.title for m in METHODS.values()))
show_flash()

reward_models = [r for r in ws.runs_of(REWARD_KIND) if r.status().get("state") == "completed"]
policy_runs = ws.runs_of(*METHODS)
policy_runs.sort(key=lambda r: r.status().get("created_at", ""), reverse=True)
with st.expander("Start a new run", expanded=not policy_runs):
    method = st.segmented_control("Method", list(METHODS), format_func=lambda m: METHODS[m].title, default="ppo",
                                  key="policy.method", help="Each method has its own knobs and literature defaults; "
                                  "all share the rollout, the reward model, the reference and the plots of KL.")
    method = method or "ppo"
    st.caption(METHODS[method].summary)
    if not reward_models:
        st.info("Train a reward model first (Reward model page).")
    st.session_state.setdefault(f"{method}.name", new_run_name(method))
    with st.form(f"{method}-form"):
        col_name, col_rm = st.columns(2)
        name = col_name.text_input("Run name", key=f"{method}.name")
        rm_id = col_rm.selectbox("Reward model", [r.id for r in reward_models], key=f"{method}.reward")
        fields = policy_knobs(method, method, ws.model_config())
        pairs_from = RM_PAIRS
        if METHODS[method].learns_from_pairs:
            pairs_from = st.radio("Pairs to learn from", (RM_PAIRS, STORE_PAIRS), horizontal=True,
                                  key=f"{method}.pairs",
                                  help=f"The reward model's pairs (the default) let {METHODS[method].title} and the "
                                       "RL methods learn from the same preferences; the pair store holds "
                                       f"{ws.store().count()} now.")
        base = ws.model_config()
        st.caption(f"Policy base: `{base.source}` ({base.quant}); change it on the Model page.")
        start = st.form_submit_button("Start", type="primary", disabled=not reward_models)
    if start and not started_already(name):
        with engine_errors(f"Starting {METHODS[method].title}"):
            config = METHODS[method].config(model=ws.model_config(), **fields)
            with tempfile.TemporaryDirectory() as tmp:
                pairs = None
                if pairs_from == STORE_PAIRS:  # the run keeps its own copy of them
                    pairs = Path(tmp) / "pairs.jsonl"
                    ws.store().export(pairs)
                job = prepare_policy_job(ws.runs / safe_name(name), config, ws.runs / rm_id, pairs_path=pairs)
            submit_job(job, "ppo.pick", f"{method}.name")
queue_notice()

kinds = {r.id: r.config().get("kind", "ppo") for r in policy_runs}
run = run_picker(policy_runs, "Run", "ppo.pick",
                 describe=lambda i: f"{i} ({METHODS[kinds[i]].title if kinds[i] in METHODS else kinds[i]})")
if run is None:
    st.info("No policy run yet.")
    st.stop()


def show_phase(status: dict) -> None:
    phase = {"rollout": "generating and scoring", "update": "updating"}.get(status.get("phase"), "")
    if status.get("state") == "running" and phase:
        st.caption(f"Now {phase} step {int(status.get('step', 0)) + 1}.")


status = live_header(run, "ppo", show_phase)
kind = run.config().get("kind", "ppo")
config = run.config().get("config", {})
run_method = METHODS[kind]  # the picker lists the runs of the registry's methods only
# the run's main settings, in the words of its kind of method (told by the settings it has), else the common ones
if run_method.learns_from_pairs:
    settings = (f"{run_method.title} · β {config.get('kl_coef')} · {config.get('batch_size')} pairs per step from "
                f"{Path(run.config().get('pairs', '?')).name}")
elif "adaptive_kl" in config:  # adaptive β (PPO)
    adaptive = "adaptive" if config.get("adaptive_kl") else "fixed"
    settings = (f"{run_method.title} · β {config.get('kl_coef')} ({adaptive}) · KL estimator "
                f"{config.get('kl_estimator')} · batch {config.get('batch_size')}")
elif "group_size" in config:  # a group method (GRPO, RLOO)
    variant = "Dr. GRPO" if config.get("loss_type") == "dr_grpo" else run_method.title
    where = f" in the {config.get('kl_in')}" if "kl_in" in config else " in the reward"
    settings = (f"{variant} · β {config.get('kl_coef')}{where} · {config.get('batch_size')} answers per step, "
                f"{config.get('group_size')} per prompt")
else:
    settings = f"{run_method.title} · β {config.get('kl_coef')} · batch {config.get('batch_size')}"
st.caption(f"{settings} · {config.get('response_length')} tokens · T {config.get('temperature')}")
rows = run.metrics()
pending = status.get("rollout") if status.get("state") == "running" else None
if pending and rows and pending["step"] <= rows[-1]["step"]:
    pending = None
st.caption(f"{len(rows)} steps plotted" + (f" + step {pending['step']}'s rollout (hollow marker, update running)"
                                          if pending else ""))
alarm_notice(run, rows, status, all_clear=True)  # what the run raised, and a check now
panels = policy_panels(kind, config, has_gold=run.config().get("gold", False),
                       has_kl_estimators=logs_kl_estimators(rows))
figures, _ = metric_figures(run, panels, kind, pending)
for start in range(0, len(figures), 3):
    for col, (title, _), figure in zip(st.columns(3), panels[start:start + 3], figures[start:start + 3]):
        col.plotly_chart(figure, key=f"ppo.{title}")

st.subheader("Samples")
samples = run.samples()
if samples and run_method.learns_from_pairs:
    st.caption("The pairs of each step, with the margin of their implicit rewards β·(log π/π_ref of the chosen − "
               "of the rejected): positive when the policy already prefers the chosen answer more than the "
               f"reference does. {run_method.title}'s own answers are the held-out probes below.")
    frame = pd.DataFrame(samples[::-1])[["step", "prompt", "chosen", "rejected", "margin"]]
    st.dataframe(frame, hide_index=True, height=260,
                 column_config={"margin": st.column_config.NumberColumn("implicit margin", format="%+.3f")})
elif samples:
    columns = (["step", "prompt", "response", "score", "kl"] + (["gold"] if "gold" in samples[-1] else [])
               + (["advantage"] if "advantage" in samples[-1] else []))
    frame = pd.DataFrame(samples[::-1])[columns]
    st.dataframe(frame, hide_index=True, height=260,
                 column_config={"score": st.column_config.NumberColumn("RM score", format="%.3f"),
                                "kl": st.column_config.NumberColumn("KL (nats)", format="%.3f"),
                                "gold": st.column_config.NumberColumn("gold score", format="%.3f"),
                                "advantage": st.column_config.NumberColumn(
                                    "advantage", format="%+.3f", help="against the other answers to its prompt")})
    token_view(samples, "ppo.tokens")
else:
    st.caption("The first samples appear after the first step.")

st.subheader("Held-out probes: reference vs current policy")
probes = run.probes()
summary = probe_summary(probes)
policy_steps = [s for s in summary if s["step"] > 0]
if not summary:
    st.caption("The reference answers the held-out probe prompts after the first step; the policy every "
               f"{config.get('probe_every')} steps." if config.get("probe_every") else
               "This run answers no probe prompts (probe_every = 0).")
else:
    several = summary[0]["answers"] // max(summary[0]["prompts"], 1)
    st.caption(f"{summary[0]['prompts']} held-out prompts (never trained on), answered by the reference and, every "
               f"{config.get('probe_every')} steps, by the policy, with the same sampling seed: a change here is "
               "training, not a lucky batch."
               + (f" The reference answered each {several} times (further seeds); a gain is the policy's answer "
                  "against the mean of the reference's." if several > 1 else ""))
    if policy_steps:
        last = policy_steps[-1]
        words = [f"at step {last['step']}: KL {last['kl']:.2f} ± {last['kl_se']:.2f} nats"]
        for key, name in (("score", "RM score"), ("gold", "gold score")):
            if f"{key}_gain" in last:
                gain, se = last[key + "_gain"], last[key + "_gain_se"]
                noise = "" if is_clear(gain, se) else ", within the noise"
                words.append(f"{name} {summary[0][key]:.2f} → {last[key]:.2f} ({gain:+.2f} ± {se:.2f}{noise})")
        st.markdown(md("; ".join(words)) + ".")
        style = run_styles([run_facts(run)])[run.id]  # its method's colour and its β's marker, as on every chart
        st.plotly_chart(probe_figure(summary, style, kind), key="ppo.probes")
    reference = {p["prompt"]: p["response"] for p in probes if p["policy"] == "reference" and not p.get("sample")}
    latest_step = policy_steps[-1]["step"] if policy_steps else None
    policy = {p["prompt"]: p["response"] for p in probes if p["policy"] == "policy" and p["step"] == latest_step}
    for prompt, answer in list(reference.items())[:SHOWN_PROBES]:
        st.markdown(f"**{md(prompt)}**")
        col_ref, col_pol = st.columns(2)
        col_ref.caption("reference (frozen base)")
        col_ref.text(answer)
        col_pol.caption(f"policy at step {latest_step}" if latest_step else "policy (after the first probe step)")
        col_pol.text(policy.get(prompt, "—"))

st.subheader("Share")
report_button(run.path, kind)

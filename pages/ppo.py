"""PPO: every knob with its meaning and literature default; Start, Stop, Resume; live plots and samples."""

import pandas as pd
import streamlit as st

from dashboard import plots
from dashboard.state import metric_figures, require_app_shell, workspace
from dashboard.widgets import (
    choice_knob,
    engine_errors,
    knob,
    live_header,
    md,
    queue_notice,
    run_picker,
    show_flash,
    submit_job,
)
from rlhf_engine.config import KL_ESTIMATORS, PPOConfig
from rlhf_engine.jobs import PPO_KIND, REWARD_KIND, prepare_ppo_job
from rlhf_engine.runfolder import new_run_name, safe_name

require_app_shell()

K = "ppo"
ws = workspace()
st.title("PPO")
show_flash()
st.caption("The policy (base + LoRA) writes answers, the reward model scores them, and PPO raises the "
           "probability of well-scored answers. Each token also pays β·KL to the frozen reference, "
           "so the policy cannot drift far from the base model to please the reward model.")

reward_models = [r for r in ws.runs_of(REWARD_KIND) if r.status().get("state") == "completed"]
with st.expander("Start a new run", expanded=not ws.runs_of(PPO_KIND)):
    if not reward_models:
        st.info("Train a reward model first (Reward model page).")
    st.session_state.setdefault("ppo.name", new_run_name("ppo"))
    with st.form("ppo-form"):
        col_name, col_rm = st.columns(2)
        name = col_name.text_input("Run name", key="ppo.name")
        rm_id = col_rm.selectbox("Reward model", [r.id for r in reward_models])
        st.markdown("**KL penalty**")
        c = st.columns(4)
        with c[0]:
            kl_coef = knob(PPOConfig, "kl_coef", K, label="β (KL coefficient)")
        with c[1]:
            adaptive = knob(PPOConfig, "adaptive_kl", K, label="adaptive β")
        with c[2]:
            kl_target = knob(PPOConfig, "kl_target", K, label="KL target (nats)")
        with c[3]:
            estimator = choice_knob(PPOConfig, "kl_estimator", KL_ESTIMATORS, K, label="KL estimator")
        st.markdown("**Rollouts**")
        c = st.columns(4)
        with c[0]:
            steps = knob(PPOConfig, "steps", K, label="PPO steps")
        with c[1]:
            batch_size = knob(PPOConfig, "batch_size", K, label="batch (prompts per step)")
        with c[2]:
            response_length = knob(PPOConfig, "response_length", K, label="response length (tokens)")
        with c[3]:
            temperature = knob(PPOConfig, "temperature", K, label="temperature")
        st.markdown("**Update**")
        c = st.columns(4)
        with c[0]:
            ppo_epochs = knob(PPOConfig, "ppo_epochs", K, label="PPO epochs")
            num_mini_batches = knob(PPOConfig, "num_mini_batches", K, label="minibatches")
        with c[1]:
            cliprange = knob(PPOConfig, "cliprange", K, label="policy clip range")
            cliprange_value = knob(PPOConfig, "cliprange_value", K, label="value clip range")
        with c[2]:
            learning_rate = knob(PPOConfig, "learning_rate", K, label="learning rate")
            lr_schedule = choice_knob(PPOConfig, "lr_schedule", ("linear", "constant"), K, label="lr schedule")
        with c[3]:
            vf_coef = knob(PPOConfig, "vf_coef", K, label="value loss weight")
            lam = knob(PPOConfig, "lam", K, label="GAE λ")
        with st.popover("More: γ, reward handling, seed"):
            gamma = knob(PPOConfig, "gamma", K, label="γ (discount)")
            whiten_rewards = knob(PPOConfig, "whiten_rewards", K, label="whiten rewards")
            normalize_reward = knob(PPOConfig, "normalize_reward", K, label="normalise RM scores")
            use_eos_penalty = st.checkbox("penalise answers with no EOS", key=f"{K}.use_eos_penalty",
                                          help="Subtract a fixed amount from the score of answers cut at the cap")
            eos_penalty = st.number_input("missing-EOS penalty (score units)", value=1.0, key=f"{K}.eos_penalty")
            max_grad_norm = knob(PPOConfig, "max_grad_norm", K, label="gradient clip")
            checkpoint_every = knob(PPOConfig, "checkpoint_every", K, label="checkpoint every (steps)")
            probe_every = knob(PPOConfig, "probe_every", K, label="probe answers every (steps)")
            seed = knob(PPOConfig, "seed", K, label="seed")
        base = ws.model_config()
        st.caption(f"Policy base: `{base.source}` ({base.quant}); change it on the Model page.")
        start = st.form_submit_button("Start", type="primary", disabled=not reward_models)
    if start:
        with engine_errors("Starting PPO"):
            config = PPOConfig(
                model=ws.model_config(), steps=steps, batch_size=batch_size, num_mini_batches=num_mini_batches,
                ppo_epochs=ppo_epochs, learning_rate=learning_rate, lr_schedule=lr_schedule,
                max_grad_norm=max_grad_norm, response_length=response_length, temperature=temperature,
                kl_coef=kl_coef, adaptive_kl=adaptive, kl_target=kl_target, kl_estimator=estimator, gamma=gamma,
                lam=lam, cliprange=cliprange, cliprange_value=cliprange_value, vf_coef=vf_coef,
                whiten_rewards=whiten_rewards, normalize_reward=normalize_reward,
                missing_eos_penalty=eos_penalty if use_eos_penalty else None,
                checkpoint_every=checkpoint_every, probe_every=probe_every, seed=seed,
            )
            job = prepare_ppo_job(ws.runs / safe_name(name), config, ws.runs / rm_id)
            submit_job(job, "ppo.pick", "ppo.name")
queue_notice()

run = run_picker(ws.runs_of(PPO_KIND), "PPO run", "ppo.pick")
if run is None:
    st.info("No PPO run yet.")
    st.stop()


def show_phase(status: dict) -> None:
    phase = {"rollout": "generating and scoring", "update": "updating"}.get(status.get("phase"), "")
    if status.get("state") == "running" and phase:
        st.caption(f"Now {phase} step {int(status.get('step', 0)) + 1}.")


status = live_header(run, "ppo", show_phase)
config = run.config().get("config", {})
st.caption(f"β {config.get('kl_coef')} ({'adaptive' if config.get('adaptive_kl') else 'fixed'}) · "
           f"KL estimator {config.get('kl_estimator')} · batch {config.get('batch_size')} · "
           f"{config.get('response_length')} tokens · T {config.get('temperature')}")
rows = run.metrics()
pending = status.get("rollout") if status.get("state") == "running" else None
if pending and rows and pending["step"] <= rows[-1]["step"]:
    pending = None
st.caption(f"{len(rows)} steps plotted" + (f" + step {pending['step']}'s rollout (hollow marker, update running)"
                                          if pending else ""))
figures, _ = metric_figures(run, plots.PPO_PANELS, PPO_KIND, pending)
for start in range(0, len(figures), 3):
    for col, (title, _), figure in zip(st.columns(3), plots.PPO_PANELS[start:start + 3], figures[start:start + 3]):
        col.plotly_chart(figure, key=f"ppo.{title}")

st.subheader("Samples")
samples = run.samples()
if samples:
    frame = pd.DataFrame(samples[::-1])[["step", "prompt", "response", "score", "kl"]]
    st.dataframe(frame, hide_index=True, height=260,
                 column_config={"score": st.column_config.NumberColumn(format="%.3f"),
                                "kl": st.column_config.NumberColumn("KL (nats)", format="%.3f")})
else:
    st.caption("The first samples appear after the first step.")

st.subheader("Probe prompts: reference vs current policy")
probes = run.probes()
reference = {p["prompt"]: p["response"] for p in probes if p["policy"] == "reference"}
latest_step = max((p["step"] for p in probes if p["policy"] == "policy"), default=None)
policy = {p["prompt"]: p["response"] for p in probes if p["policy"] == "policy" and p["step"] == latest_step}
if not reference:
    st.caption("The reference answers the probe prompts after the first step.")
for prompt, answer in reference.items():
    st.markdown(f"**{md(prompt)}**")
    col_ref, col_pol = st.columns(2)
    col_ref.caption("reference (frozen base)")
    col_ref.text(answer)
    col_pol.caption(f"policy at step {latest_step}" if latest_step else "policy (after the first probe step)")
    col_pol.text(policy.get(prompt, "—"))

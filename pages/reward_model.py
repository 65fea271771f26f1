"""Reward model: train one on the stored pairs in the background, watch it learn, evaluate it, try it."""

import dataclasses
import tempfile
from pathlib import Path

import streamlit as st

from dashboard.state import metric_figures, require_app_shell, scoring_model, workspace
from dashboard.widgets import (
    choice_knob,
    engine_errors,
    knob,
    live_header,
    queue_notice,
    run_picker,
    show_flash,
    started_already,
    submit_job,
    tracker_knob,
)
from rlhf_engine.config import QUANT_CHOICES, REWARD_POOLINGS, ModelConfig, RewardConfig, field_help
from rlhf_engine.lab.figures import RM_PANELS, margin_histogram, score_length_scatter
from rlhf_engine.runs.reward_job import REWARD_KIND, learnt_beyond_chance, prepare_reward_job, reward_verdict
from rlhf_engine.runs.runfolder import new_run_name, safe_name

require_app_shell()

ws = workspace()
store = ws.store()
n_pairs = store.count()
st.title("Reward model")
show_flash()
st.caption("A Bradley–Terry model: the base model with a LoRA adapter and a linear head, trained so that "
           "score(chosen) > score(rejected). Scores are then normalised to mean 0, std 1 on the base "
           "model's own answers, as PPO expects.")

with st.expander("Train a new reward model", expanded=not ws.runs_of(REWARD_KIND)):
    base = ws.model_config()
    st.session_state.setdefault("rm.name", new_run_name("rm"))
    with st.form("rm-form"):
        name = st.text_input("Run name", key="rm.name")
        col1, col2, col3 = st.columns(3)
        with col1:
            steps = knob(RewardConfig, "steps", "rm")
            lr = knob(RewardConfig, "learning_rate", "rm", label="learning rate")
        with col2:
            lora_r = knob(ModelConfig, "lora_r", "rm", label="LoRA rank")
            batch_size = knob(RewardConfig, "batch_size", "rm", label="batch size (pairs)")
        with col3:
            quant = st.selectbox("quantization", QUANT_CHOICES, index=QUANT_CHOICES.index(base.quant),
                                 help=field_help(ModelConfig)["quant"] + ". Default: the Model page's choice, so "
                                 "scores are normalised on the same policy PPO starts from (else PPO renormalises "
                                 "on 64 of its own samples first).")
            pooling = choice_knob(RewardConfig, "pooling", REWARD_POOLINGS, "rm")
            report_to = tracker_knob(RewardConfig, "rm")
        st.caption(f"Base model `{base.source}` (change it on the Model page). Trains on all {n_pairs} stored pairs; "
                   f"{RewardConfig().eval_fraction:.0%} are held out for evaluation. Pooling "
                   f"auto is {RewardConfig(model=base).resolved_pooling()} pooling for this model.")
        start = st.form_submit_button("Train", type="primary", disabled=n_pairs < 2)
    if n_pairs < 2:
        st.info("Store at least two pairs on the Preferences page first.")
    if start and not started_already(name):
        with engine_errors("Starting the reward model"):
            model = dataclasses.replace(base, quant=quant, lora_r=lora_r, lora_alpha=2 * lora_r)
            config = RewardConfig(model=model, steps=steps, learning_rate=lr, batch_size=batch_size, pooling=pooling,
                                  report_to=report_to)
            with tempfile.TemporaryDirectory() as tmp:
                data = Path(tmp) / "pairs.jsonl"
                store.export(data)
                job = prepare_reward_job(ws.runs / safe_name(name), config, data)
            submit_job(job, "rm.pick", "rm.name")
queue_notice()

run = run_picker(ws.runs_of(REWARD_KIND), "Reward model run", "rm.pick")


if run is None:
    st.info("No reward model yet.")
    st.stop()
live_header(run, "rm")
figures, steps = metric_figures(run, RM_PANELS, REWARD_KIND)
st.caption(f"{steps} steps plotted")
for col, (title, _), figure in zip(st.columns(len(figures)), RM_PANELS, figures):
    col.plotly_chart(figure, key=f"rm.{title}")

evaluation = run.eval()
if evaluation:
    st.subheader("Evaluation on held-out pairs")
    cols = st.columns(3)
    cols[0].metric("held-out accuracy", f"{evaluation['accuracy']:.1%}",
                   help="Share of held-out pairs where the chosen answer scores higher")
    cols[1].metric("mean margin (raw)", f"{evaluation['margin_mean']:.3f}")
    cols[2].metric("held-out pairs", evaluation.get("held_out_pairs", len(evaluation.get("margins", []))))
    verdict = reward_verdict(run.path)
    (st.success if learnt_beyond_chance(evaluation) else st.warning)(verdict)
    col_hist, col_len = st.columns(2)
    col_hist.plotly_chart(margin_histogram(evaluation.get("margins", [])), key="rm.margins")
    if evaluation.get("held_out"):
        col_len.plotly_chart(score_length_scatter(evaluation["held_out"]), key="rm.length")

    st.subheader("Try it")
    prompt = st.text_area("Prompt", "Describe a rainy afternoon.", key="rm.try.prompt")
    response = st.text_area("Response", "It was a calm, lovely afternoon with the soft sound of rain.",
                            key="rm.try.response")
    if st.button("Score", key="rm.try.score"):
        with engine_errors("Scoring"), st.spinner("Loading the reward model…"):
            with scoring_model(run.path) as rm:
                score = rm.score([prompt], [response])[0].item()
            st.metric("score (normalised)", f"{score:+.3f}",
                      help="0 is the base model's average answer; +1 is one standard deviation better")

"""KL sweep: one action queues PPO runs that differ only in β (or one implementation detail), or runs of
several methods (any of the registry's: PPO, GRPO, RLOO, DPO, ...) at their βs, plus an optional adaptive-β run
and the best-of-n baseline; then the frontier and gold vs proxy, live."""

import streamlit as st

from dashboard.lab import submit_sweep, sweep_picker, sweep_view
from dashboard.state import require_app_shell, workspace
from dashboard.widgets import (
    engine_errors,
    fill_knobs,
    fill_ppo_knobs,
    first_value,
    policy_knobs,
    queue_notice,
    show_flash,
    started_already,
)
from rlhf_engine.config import PPOConfig, field_defaults
from rlhf_engine.lab import workshop
from rlhf_engine.lab.sweep import (
    METHOD_FIELD,
    SWEEPABLE,
    list_sweeps,
    method_config,
    parse_method_betas,
    parse_values,
    plan_methods,
)
from rlhf_engine.lab.sweep_job import prepare_sweep
from rlhf_engine.methods import registry
from rlhf_engine.runs.reward_job import REWARD_KIND
from rlhf_engine.runs.runfolder import new_run_name, safe_name

require_app_shell()

K = "sweep"
METHODS = registry.methods()
METHOD_TITLES = ", ".join(method.title for method in METHODS.values())
PAIRS_TITLES = ", ".join(method.title for method in METHODS.values() if method.learns_from_pairs)
VALUE_HINTS = {"kl_coef": "0, 0.01, 0.05, 0.2", "normalize_reward": "on, off", "whiten_advantages": "on, off",
               "missing_eos_penalty": "none, 1.0", "kl_estimator": "k1, k3",
               METHOD_FIELD: ", ".join(f"{name}={field_defaults(method.config)['kl_coef']:g}"  # each its own β
                                       for name, method in METHODS.items())}
VARY_LABELS = {"kl_coef": "β (KL coefficient)", "normalize_reward": "reward normalisation",
               "whiten_advantages": "advantage whitening", "missing_eos_penalty": "missing-EOS penalty",
               "kl_estimator": "KL estimator (k1 / k3)", METHOD_FIELD: f"method ({METHOD_TITLES})"}


def use_workshop_preset() -> None:
    """The workshop's sweep (rlhf_engine.lab.workshop, sized to this device) in the form; runs before the widgets."""
    sizes = workshop.preset()
    fill_ppo_knobs(K, workshop.ppo_config(workspace().model_config(), sizes))
    fill_knobs(K, {"vary": "kl_coef", "values.kl_coef": ", ".join(format(b, "g") for b in sizes.betas),
                   "adaptive": False, "bon": sizes.best_of_n})


ws = workspace()
st.title("KL sweep")
show_flash()
st.caption("How much should the policy be allowed to move? A sweep trains the same policy several times, "
           "changing only β, so the plots show what the KL penalty buys: small β reaches a higher reward-model "
           "score at a larger KL, and, past some point, a lower true (gold) score. It can vary one "
           "implementation detail instead (Huang et al. 2023) to see what it changes, or set the methods side by "
           f"side ({METHOD_TITLES}, each at its βs) on one reward model, one prompt set and one frontier.")

reward_models = [r for r in ws.runs_of(REWARD_KIND) if r.status().get("state") == "completed"]
with st.expander("Start a sweep", expanded=not list_sweeps(ws.runs)):
    if not reward_models:
        st.info("Train a reward model first (Reward model page).")
    st.button("Fill in the workshop preset", key=f"{K}.preset", on_click=use_workshop_preset,
              help="The Workshop page's sweep, sized to this machine: short runs at a high constant learning rate, "
                   "held-out probes every few steps and a best-of-n baseline (benchmarks/RESULTS.md).")
    vary = st.radio("Vary", (*SWEEPABLE, METHOD_FIELD), format_func=VARY_LABELS.get, horizontal=True,
                    key=f"{K}.vary")
    if vary == METHOD_FIELD:
        st.caption("Each `method=β` is one run (repeat a method for several βs). The runs share the reward model, "
                   "the prompts, the answer budget per step, answer length, temperature, probes and seed below; each "
                   "method keeps its own literature defaults for the rest (PPO's are the form's)."
                   + (f" {PAIRS_TITLES} learns from the reward model's pairs and is placed on the chart by its "
                      "held-out probe answers." if PAIRS_TITLES else ""))
    st.session_state.setdefault(f"{K}.name", new_run_name("sweep"))
    with st.form("sweep-form"):
        col_name, col_rm = st.columns(2)
        name = col_name.text_input("Sweep name", key=f"{K}.name")
        rm_id = col_rm.selectbox("Reward model", [r.id for r in reward_models])
        col_values, col_adaptive, col_bon = st.columns(3)
        values_key = f"{K}.values.{vary}"
        values_text = col_values.text_input(f"Values of {VARY_LABELS[vary]} (comma-separated)", key=values_key,
                                            **first_value(values_key, VALUE_HINTS[vary]))
        adaptive = col_adaptive.checkbox("add an adaptive-β run", key=f"{K}.adaptive", disabled=vary == METHOD_FIELD,
                                         help="Starts at the β below and adapts it towards the KL target "
                                              "(Ziegler et al. 2019)",
                                         **first_value(f"{K}.adaptive", vary == "kl_coef"))
        best_of_n = col_bon.number_input("best-of-n baseline: n (0 = none)", 0, 64, key=f"{K}.bon",
                                         help="Sample n reference answers for 16 prompts; best-of-1…n give a "
                                              "reward-vs-KL curve with no training", **first_value(f"{K}.bon", 16))
        batched = st.checkbox("train the runs side by side in one process", key=f"{K}.batched",
                              help="One copy of the base model, one decoding batch per step; each run keeps its "
                                   "own adapter, value head, optimiser and random stream, and logs what it would "
                                   "alone. Off: one job per run, one after another.",
                              **first_value(f"{K}.batched", True))
        st.markdown("**Settings every run shares** (β here is the adaptive run's start, and every run's β "
                    "when another setting is varied)")
        fields = policy_knobs(K, model=ws.model_config())
        base = ws.model_config()
        st.caption(f"Policy base: `{base.source}` ({base.quant}); change it on the Model page.")
        start = st.form_submit_button("Queue the sweep", type="primary", disabled=not reward_models)
    if start and not started_already(name):
        with engine_errors("Starting the sweep"):
            config = PPOConfig(model=base, **fields)
            methods = None
            if vary == METHOD_FIELD:
                betas = parse_method_betas(values_text)
                form_method = registry.of_config(config).name  # the form's knobs are its method's
                configs = {m: config if m == form_method else method_config(config, m) for m in betas}
                methods, values, adaptive = plan_methods(configs, betas), None, False
            else:
                values = parse_values(vary, values_text)
            sweep_dir = ws.runs / safe_name(name, "sweep name")
            jobs = prepare_sweep(sweep_dir, config, ws.runs / rm_id, vary, values, adaptive, int(best_of_n),
                                 batched=batched, methods=methods)
            st.session_state.pop(f"{K}.name", None)
            submit_sweep(sweep_dir.name, jobs, f"{K}.pick")
            st.rerun()
queue_notice()

sweep = sweep_picker(list_sweeps(ws.runs), f"{K}.pick")
if sweep is None:
    st.info("No sweep yet.")
    st.stop()
sweep_view(sweep, K)

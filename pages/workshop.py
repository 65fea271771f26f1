"""Workshop: the loop in order, one click per step, with what each step teaches, and a tick when it is done.

Every sentence that reads a result comes from the runs' own numbers (rlhf_engine.lab.story)."""

import streamlit as st

from dashboard.lab import submit_sweep, sweep_view
from dashboard.room import current_room, identity
from dashboard.state import file_signature, is_live, require_app_shell, workspace
from dashboard.widgets import alarm_notice, engine_errors, md, queue_notice, show_flash, status_line, submit_job
from rlhf_engine.core.models import describe_model
from rlhf_engine.data.pairs import read_pairs
from rlhf_engine.lab import figures, styles, workshop
from rlhf_engine.lab.noise import is_clear
from rlhf_engine.lab.story import FIT_NOTE, overoptimisation_peaks, overoptimisation_sentence, run_fit
from rlhf_engine.lab.sweep import list_sweeps, member_title, method_config, plan_methods, probe_summary, split_label
from rlhf_engine.lab.sweep_job import prepare_sweep
from rlhf_engine.methods import registry
from rlhf_engine.room.progress import METHODS_PREFIX, OVEROPT_PREFIX, RM_PREFIX, STEPS, SWEEP_PREFIX
from rlhf_engine.runs.policy_job import prepare_policy_job
from rlhf_engine.runs.reward_job import (
    REWARD_KIND,
    learnt_beyond_chance,
    prepare_reward_job,
    reward_verdict,
    weak_reward_model_warning,
)
from rlhf_engine.runs.runfolder import ACTIVE_STATES, list_runs, new_run_name

require_app_shell()

K = "workshop"

ws = workspace()
who = identity()
assigned = current_room().assignment(who.pid) if who.role == "participant" else None  # the teacher's β and method
sizes = workshop.preset()
st.title("Workshop")
show_flash()
st.caption(f"Five steps, in order, and two optional ones. Each button starts its step with settings sized for "
           f"this machine ({'a GPU' if sizes.device == 'cuda' else 'CPU'}: about {sizes.minutes} minutes from a fresh "
           "clone to the finished sweep plot); the other pages show the same runs with every knob. A step's box "
           "ticks when it is done, and its button then rests.")

model = ws.model_config()
store = ws.store()
stored_workshop_pairs = store.count(source=workshop.PAIRS_SOURCE)
shipped = read_pairs(workshop.PAIRS_FILE)


def _ours(runs, prefix):
    return [r for r in runs if r.id.startswith(prefix)]


reward_runs = _ours(ws.runs_of(REWARD_KIND), RM_PREFIX)
done_rm = next((r for r in reward_runs if r.status().get("state") == "completed"), None)
sweeps = [s for s in list_sweeps(ws.runs) if s.id.startswith(SWEEP_PREFIX)]
latest_sweep = sweeps[0] if sweeps else None
sweep_states = latest_sweep.states() if latest_sweep else {}
sweep_done = bool(sweep_states) and all(state == "completed" for state in sweep_states.values())
sweep_going = any(state in ACTIVE_STATES for state in sweep_states.values())
overopt_kind = registry.of_config(workshop.overopt_ppo_config(model, sizes)).name  # the run of step 6: its method
overopt_runs = _ours(ws.runs_of(overopt_kind), OVEROPT_PREFIX)


def run_states() -> tuple:
    """(run, state) of every run of the workspace."""
    return tuple((run.id, run.status().get("state")) for run in list_runs(ws.runs))


def states() -> tuple:
    """The runs' states, and the step and probe answers of the runs the page draws outside a sweep's own live view
    (the reward model's, step 6's): the ticks, buttons, status lines and step 6's chart change only when one of
    these does. A sweep's runs redraw its view as they log (dashboard.lab.sweep_live_status): a rerun of the whole
    page for each of their steps would take the CPU they train on."""
    alone = reward_runs[:1] + overopt_runs[:1]
    return run_states() + tuple((run.status().get("step"), file_signature(run.path / "probes.jsonl"))
                                for run in alone)


def watch() -> None:
    """Every 2 s while a step runs: the page reruns when a run changes state, logs a step or answers its probes;
    what the device is busy with. Each step draws its own runs' progress (one line per run, once)."""
    if st.session_state.get(f"{K}.states") != states():
        st.rerun(scope="app")
    queue_notice()


st.session_state[f"{K}.states"] = states()
# Drawn on every run of the page (refreshing only while a step runs), so the browser never asks for a fragment
# that a later run of the page no longer has ("The fragment with id … does not exist anymore").
live = any(state in ACTIVE_STATES for _, state in run_states())
st.fragment(watch, run_every=2.0 if live else None)()


def step(number: int, title: str, done: bool) -> None:
    icon = ":material/check_box:" if done else ":material/check_box_outline_blank:"
    st.subheader(f"{icon} {number}. {title}")


# 1 -------------------------------------------------------------------------------------------------------
step(1, STEPS[0], ws.model_chosen())
st.markdown("The **policy** is a small chat model, bundled: no download. RLHF will not retrain it: it adds a small "
            "LoRA adapter and trains only that. The untouched model stays as the **reference**.")
st.caption(f"Model: {md(describe_model(model))}." + (" Change it on the Model page." if ws.model_chosen() else ""))
if st.button("Use the bundled model", key=f"{K}.model", type="primary", disabled=ws.model_chosen()):
    ws.save_model_config(model)
    st.rerun()

# 2 -------------------------------------------------------------------------------------------------------
step(2, STEPS[1], stored_workshop_pairs >= len(shipped))
st.markdown("People compare two answers to the same prompt and pick the better one. Here a **simulated annotator** "
            "did it: it prefers the more *positive* answer (VADER sentiment) and, like a person, dislikes answers "
            "that repeat themselves. Its score is the **gold** reward: the truth the reward model can only "
            f"approximate. The {len(shipped)} pairs were made once, by the same model and annotator, and ship with "
            "the workbench, so the workshop's minutes go to training.")
if st.button(f"Add the {len(shipped)} simulated pairs", key=f"{K}.pairs",
             disabled=not ws.model_chosen() or stored_workshop_pairs >= len(shipped)):
    with engine_errors("Adding the pairs"):
        store.add_many(shipped, source=workshop.PAIRS_SOURCE)
        st.rerun()
example = workshop.example_pair(shipped)
st.caption((f"For example, to “{md(example.prompt)}” — chosen: “{md(example.chosen)}” · rejected: "
            f"“{md(example.rejected)}”. " if example else "")
           + f"Made with `{workshop.PAIRS_COMMAND}`; the Preferences page makes more live.")

# 3 -------------------------------------------------------------------------------------------------------
step(3, STEPS[2], done_rm is not None)
st.markdown("The **reward model** is the same small model with a score head. It learns from the pairs that "
            "score(chosen) > score(rejected) (Bradley–Terry). It sees only these pairs, so it learns the "
            "annotator's taste *approximately*: remember this for step 6.")
if st.button("Train the reward model", key=f"{K}.rm",
             disabled=stored_workshop_pairs < len(shipped) or any(
                 r.status().get("state") in ACTIVE_STATES + ("completed",) for r in reward_runs)):
    with engine_errors("Starting the reward model"):
        job = prepare_reward_job(ws.runs / new_run_name(RM_PREFIX), workshop.reward_config(model, sizes),
                                 workshop.PAIRS_FILE)
        submit_job(job, f"{K}.rm.pick", f"{K}.rm.name")
if reward_runs:
    st.markdown(status_line(reward_runs[0]))
    verdict = reward_verdict(reward_runs[0].path)  # how often it agrees on held-out pairs, ± SE, against chance
    if verdict:
        (st.caption if learnt_beyond_chance(reward_runs[0].eval()) else st.warning)(md(verdict))

# 4 -------------------------------------------------------------------------------------------------------
step(4, STEPS[3], sweep_done)
path = (f"every {sizes.probe_every} steps the first {sizes.probe_subset} of {sizes.probe_prompts} held-out prompts "
        f"(the run's path on the chart), and at the end all {sizes.probe_prompts}" if sizes.probe_subset else
        f"every {sizes.probe_every} steps the same {sizes.probe_prompts} held-out prompts")
st.markdown("PPO makes the policy write answers the reward model scores highly. Left alone, it would find answers "
            "that fool the reward model. So every token pays **β × KL**: how far the policy has moved from the "
            f"reference. The sweep trains the policy once per β ({', '.join(format(b, 'g') for b in sizes.betas)}), "
            f"{sizes.ppo_steps} steps of {sizes.batch_size} prompts each, the runs side by side on one copy of the "
            f"model, and samples best-of-{sizes.best_of_n} from the reference as a no-training baseline. Each run "
            f"answers {path}, with the same random numbers as the reference did: that is where the story is read, "
            "not from one noisy batch."
            + (f" The reference answers each prompt {sizes.reference_probe_samples} times, so the baseline a gain is "
               "measured from is steadier; best-of-n's first samples are those very answers, on the same prompts."
               if sizes.reference_probe_samples > 1 else ""))
ASSIGNED = f"β = {assigned['kl_coef']:g} ({registry.get(assigned['method']).title})" if assigned else ""
if assigned:
    st.info(f"The teacher assigned you {ASSIGNED}: the room's frontier puts your run beside the others'. So this "
            "step trains that one run instead of the whole sweep (with the best-of-n baseline).",
            icon=":material/groups:")
weak = weak_reward_model_warning(done_rm.path) if done_rm is not None else None
if weak:
    st.warning(md(weak), icon=":material/warning:")


def sweep_jobs(name: str) -> list:
    """Step 4's sweep: one run per β of the preset, or the one run (β and method) the teacher assigned."""
    base = workshop.ppo_config(model, sizes)
    values, methods = list(sizes.betas), None
    if assigned and assigned["method"] == registry.of_config(base).name:  # PPO: the workshop's settings at its β
        values = [assigned["kl_coef"]]
    elif assigned:  # another method: its own defaults, the answer budget and probes of the workshop's
        values, methods = None, plan_methods({assigned["method"]: method_config(base, assigned["method"])},
                                             {assigned["method"]: [assigned["kl_coef"]]})
    # An assigned run is a job of its own (batched=False), which the room's scheduler may train side by side with
    # other participants' runs (runs.group_job); the preset's runs train side by side in the sweep's one job.
    return prepare_sweep(ws.runs / name, base, done_rm.path, "kl_coef", values, best_of_n=sizes.best_of_n,
                         best_of_n_prompts=sizes.best_of_n_prompts, methods=methods, batched=not assigned)


if st.button(f"Run my assigned run, {ASSIGNED}" if assigned else "Run the KL sweep", key=f"{K}.sweep",
             disabled=done_rm is None or sweep_done or sweep_going):
    with engine_errors("Starting the sweep"):
        name = new_run_name(SWEEP_PREFIX)
        submit_sweep(name, sweep_jobs(name), f"{K}.sweep.pick")

# 5 -------------------------------------------------------------------------------------------------------
report_written = latest_sweep is not None and (latest_sweep.path / "report.html").is_file()
step(5, STEPS[4], report_written)
st.markdown("**Reward vs KL**: each run where it ended, the reward model's score (filled marker) and the gold score "
            "(hollow) against its KL to the reference. **Gold vs proxy**: the same two scores against √KL at every "
            "probe. Where the proxy keeps rising and the gold falls, the policy exploits the reward model: "
            "*over-optimisation*. What the runs showed, in their own numbers:")
if latest_sweep is None:
    st.caption("The results appear here once the sweep has started.")
else:
    for run in latest_sweep.runs():  # what a run raised, in full: the lines below name it
        alarm_notice(run)
    sweep_view(latest_sweep, f"{K}.view")  # its story first, then the plots; its last button writes the report

# 6 -------------------------------------------------------------------------------------------------------
overopt = overopt_runs[0] if overopt_runs else None
overopt_rows = overopt.probes() if overopt is not None else []
overopt_line = overoptimisation_sentence("At β = 0", overopt_rows) if overopt_rows else None
step(6, f"{STEPS[5]} (about {sizes.overopt_minutes} minutes)", overopt_line is not None)
long = workshop.overopt_ppo_config(model, sizes)
st.markdown(f"Run the policy with no KL penalty (β = 0) for {long.steps} steps against the same reward model, "
            f"answering all {long.probe_prompts} held-out prompts every {long.probe_every} steps. The reward model "
            "learnt the annotator's taste from a few hundred pairs, so it also likes things the annotator does not "
            "care for; a policy pushed far enough finds them. Watch the gold score peak and fall while the reward "
            "model's score keeps rising, then read the answers on the Policy training page. Gao et al. (2022) found "
            "that, against d = √KL, the gold gain of RL follows d·(a − b·log d): the page fits it to this run.")
if st.button(f"Run {long.steps} steps at β = 0", key=f"{K}.overopt",
             disabled=done_rm is None or not sweep_done or overopt is not None):
    with engine_errors("Starting the run"):
        job = prepare_policy_job(ws.runs / new_run_name(OVEROPT_PREFIX), long, done_rm.path)
        submit_job(job, f"{K}.overopt.pick", f"{K}.overopt.name")
if overopt is not None:
    st.markdown(status_line(overopt))  # the page reruns at each step and probe (watch), so this line is live
    alarm_notice(overopt)
    overopt_summary = probe_summary(overopt_rows)
    if len(overopt_summary) > 1:
        label = f"β = 0, {long.steps} steps"
        looks = styles.run_styles([styles.run_facts(overopt, label, note=f"{long.steps} steps")])
        fit, fit_lines = run_fit(overopt, f"the {long.steps}-step run at β = 0")
        st.plotly_chart(figures.gold_proxy_figure({label: overopt_summary}, styles=looks,
                                                  fits={label: fit} if fit else None,
                                                  peaks=overoptimisation_peaks({label: overopt_rows})),
                        key=f"{K}.overopt.gold")
        last = overopt_summary[-1]
        if overopt_line:
            st.markdown(md(overopt_line))
        elif "gold_gain" in last:
            gain, se = last["gold_gain"], last["gold_gain_se"]
            verdict = ("a clear gain" if gain > 0 else "a clear fall") if is_clear(gain, se) else "within the noise"
            st.caption(f"Not yet: at step {last['step']} the gold score is {last['gold']:.2f} "
                       f"({gain:+.2f} ± {se:.2f} over the reference, {verdict}), and it has not fallen clearly "
                       "from a peak.")
        if fit_lines and not is_live(overopt):  # Gao's curve once the run has ended: a fit of half a path misleads
            if fit is not None and "not a law" not in " ".join(fit_lines):
                fit_lines = fit_lines + [FIT_NOTE]
            st.markdown("**Gao et al.'s curve, fitted to this run** (dotted on the chart)\n"
                        + "\n".join(f"- {md(line)}" for line in fit_lines))

# 7 -------------------------------------------------------------------------------------------------------
methods_sweep = next((s for s in list_sweeps(ws.runs) if s.id.startswith(METHODS_PREFIX)), None)
methods_states = methods_sweep.states() if methods_sweep else {}
methods_done = bool(methods_states) and all(state == "completed" for state in methods_states.values())
step(7, f"{STEPS[6]} (about {sizes.methods_minutes} minutes)", methods_done)
titles = [registry.get(m).title for m in workshop.METHODS]
seeds = len(sizes.method_seeds)
st.markdown(
    "PPO is one way to push a policy towards what a reward model likes. Three others are in wide use: **GRPO** "
    "scores each answer against the other answers to the same prompt (no value model); **RLOO** does the same with "
    "a leave-one-out baseline (REINFORCE); **DPO** samples nothing and needs no reward model while it trains: it "
    "learns from preference pairs directly (here, the pairs the reward model learnt from). This step trains "
    f"{', '.join(titles)} side by side in one job on the same reward model, budget and held-out prompts, each at "
    f"its own usual β and each {seeds} times with a different seed, and sets them beside best-of-"
    f"{sizes.best_of_n}. One seed teaches a ranking the next seed may reverse, so the page ranks two methods only "
    "where their gold gains differ by more than their seeds do.")
bon_run = latest_sweep.best_of_n_run() if latest_sweep is not None else None
reused = workshop.methods_reused(latest_sweep, model, sizes) if latest_sweep is not None and not assigned else []
if assigned:
    st.caption("In this room the teacher compares the methods across participants: the room's frontier shows them.")
elif reused:
    st.caption(f"The sweep's run at β {' and '.join(format(split_label(label)[1], 'g') for label, _ in reused)} is "
               f"reused as {' and '.join(member_title(label) for label, _ in reused)}, and its best-of-n as the "
               "baseline: they are not trained again.")
if st.button(f"Train {', '.join(titles)} side by side ({seeds} seeds)", key=f"{K}.methods",
             disabled=bool(assigned) or not sweep_done or methods_sweep is not None):
    with engine_errors("Starting the methods"):
        name = new_run_name(METHODS_PREFIX)
        reused_labels = {label for label, _ in reused}
        plan = [(label, config) for label, config in workshop.methods_plan(model, sizes) if label not in reused_labels]
        jobs = prepare_sweep(ws.runs / name, workshop.ppo_config(model, sizes), done_rm.path, methods=plan,
                             borrowed=reused, best_of_n_from=bon_run.path if bon_run else None)
        submit_sweep(name, jobs, f"{K}.methods.pick")
if methods_sweep is not None:
    for run in methods_sweep.members():
        alarm_notice(run.run)
    sweep_view(methods_sweep, f"{K}.methods.view")

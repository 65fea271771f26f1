"""Workshop: the loop in order, one click per step, with what each step teaches and a tick when it is done."""

import random
import tempfile
from pathlib import Path

import streamlit as st

from dashboard.lab import submit_sweep, sweep_view
from dashboard.state import require_app_shell, workspace
from dashboard.widgets import engine_errors, md, queue_notice, show_flash, status_line, submit_job
from rlhf_engine import workshop
from rlhf_engine.jobs import DEMO_PAIRS_KIND, REWARD_KIND, prepare_demo_pairs_job, prepare_reward_job
from rlhf_engine.runfolder import ACTIVE_STATES, list_runs, new_run_name
from rlhf_engine.sweep import list_sweeps, prepare_sweep

require_app_shell()

K = "workshop"
ws = workspace()
st.title("Workshop")
show_flash()
st.caption("Five steps, in order. Each button starts the step with settings sized for a laptop "
           "(about 15 minutes in all on 2 CPU cores); the other pages show the same runs with every knob. "
           "A step's box ticks when it is done.")

model = ws.model_config()
store = ws.store()
n_pairs = store.count()
pair_jobs = ws.runs_of(DEMO_PAIRS_KIND)
all_reward_runs = ws.runs_of(REWARD_KIND)
reward_runs = [r for r in all_reward_runs if r.status().get("state") == "completed"]
sweeps = list_sweeps(ws.runs)
done_sweeps = [s for s in sweeps if all(state == "completed" for state in s.states().values())]


def states() -> tuple:
    """(run, state) of every run: the ticks and buttons above change only when one of these does."""
    return tuple((run.id, run.status().get("state")) for run in list_runs(ws.runs))


def watch() -> None:
    """While a step runs: its progress line, every 2 s; the page reruns when a run changes state."""
    if st.session_state.get(f"{K}.states") != states():
        st.rerun(scope="app")
    for run in list_runs(ws.runs):
        if run.status().get("state") == "running":
            st.markdown(status_line(run))
    queue_notice()


st.session_state[f"{K}.states"] = states()
any_live = any(state in ACTIVE_STATES for _, state in st.session_state[f"{K}.states"])
def step(number: int, title: str, done: bool) -> None:
    icon = ":material/check_box:" if done else ":material/check_box_outline_blank:"
    st.subheader(f"{icon} {number}. {title}")


if any_live:
    with st.container(border=True):
        st.fragment(watch, run_every=2.0)()

# 1 -------------------------------------------------------------------------------------------------------
step(1, "The model", ws.model_chosen())
st.markdown("The **policy** is a small chat model (SmolLM2-135M-Instruct, bundled: no download). RLHF will "
            "not retrain it: it adds a small LoRA adapter and trains only that. The untouched model stays "
            "as the **reference**.")
if not ws.model_chosen():
    if st.button("Use the bundled model", key=f"{K}.model", type="primary"):
        ws.save_model_config(model)
        st.rerun()
else:
    st.caption(f"Using `{md(model.source)}` ({model.quant}). Chat with it on the Model page.")

# 2 -------------------------------------------------------------------------------------------------------
step(2, "Preferences", n_pairs >= workshop.PAIRS)
st.markdown("People compare two answers to the same prompt and pick the better one. Here a **simulated "
            "annotator** does it: it prefers the more *positive* answer (VADER sentiment) and, like a person, "
            "dislikes answers that repeat themselves. Its score is the **gold** reward — the truth the reward "
            "model can only approximate.")
if st.button(f"Simulate {workshop.PAIRS} pairs", key=f"{K}.pairs", disabled=not ws.model_chosen()):
    with engine_errors("Starting"):
        job = prepare_demo_pairs_job(ws.runs / new_run_name("pairs"), workshop.PAIRS, ws.store_path, model,
                                     seed=random.randrange(2**31))
        submit_job(job, f"{K}.pairs.pick", f"{K}.pairs.name")
        st.rerun()
if pair_jobs:
    st.markdown(status_line(pair_jobs[0]))
if n_pairs:
    example = store.list(limit=1)[0].pair
    st.caption(f"{n_pairs} pairs stored. Example — chosen: “{md(example.chosen[:120])}” · rejected: "
               f"“{md(example.rejected[:120])}”")

# 3 -------------------------------------------------------------------------------------------------------
step(3, "Reward model", bool(reward_runs))
st.markdown("The **reward model** is the same small model with a score head. It learns from the pairs that "
            "score(chosen) > score(rejected) (Bradley–Terry). It only sees these pairs, so it learns the "
            "annotator's taste *approximately* — remember this for step 5.")
if st.button("Train the reward model", key=f"{K}.rm", disabled=n_pairs < workshop.PAIRS):
    with engine_errors("Starting the reward model"):
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "pairs.jsonl"
            store.export(data)
            job = prepare_reward_job(ws.runs / new_run_name("workshop-rm"), workshop.reward_config(model), data)
        submit_job(job, f"{K}.rm.pick", f"{K}.rm.name")
        st.rerun()
latest_rm = all_reward_runs[0] if all_reward_runs else None
if latest_rm is not None:
    st.markdown(status_line(latest_rm))
    accuracy = latest_rm.eval().get("accuracy")
    if accuracy is not None:
        st.caption(f"It agrees with the annotator on {accuracy:.0%} of the held-out pairs (50 % is chance).")

# 4 -------------------------------------------------------------------------------------------------------
step(4, "PPO with a KL penalty: the sweep", bool(done_sweeps))
st.markdown("PPO makes the policy write answers the reward model scores highly. Left alone, it would find "
            "answers that fool the reward model. So every token pays **β × KL**: how far the policy has moved "
            "from the reference. The sweep trains the policy once per β "
            f"({', '.join(format(b, 'g') for b in workshop.BETAS)}) and samples best-of-{workshop.BEST_OF_N} from "
            "the reference as a no-training baseline. (The KL sweep page can add a run whose β adapts to a KL "
            "target, and vary other settings.)")
if st.button("Run the KL sweep", key=f"{K}.sweep", disabled=not reward_runs):
    with engine_errors("Starting the sweep"):
        name = new_run_name("workshop-sweep")
        jobs = prepare_sweep(ws.runs / name, workshop.ppo_config(model), reward_runs[0].path, "kl_coef",
                             list(workshop.BETAS), adaptive=workshop.ADAPTIVE, best_of_n=workshop.BEST_OF_N,
                             best_of_n_prompts=workshop.BEST_OF_N_PROMPTS)
        submit_sweep(name, jobs, f"{K}.sweep.pick")
        st.rerun()

# 5 -------------------------------------------------------------------------------------------------------
latest_sweep = sweeps[0] if sweeps else None
report_written = latest_sweep is not None and (latest_sweep.path / "report.html").is_file()
step(5, "Read the results", report_written)
st.markdown("**Reward vs KL**: smaller β moves further (more KL) for a higher reward-model score. **Gold vs "
            "proxy**: the reward model's score and the annotator's (gold) score against √KL. Where the proxy "
            "keeps rising and the gold falls, the policy exploits the reward model: *over-optimisation*. "
            "Then write the report to share.")
if latest_sweep is None:
    st.caption("The plots appear here once the sweep has started.")
else:
    sweep_view(latest_sweep, f"{K}.view")  # its last button writes the report

# Go further ----------------------------------------------------------------------------------------------
with st.expander("Go further: see over-optimisation happen (about 1.5 hours on 2 CPU cores)"):
    st.markdown(
        "Five short steps rarely get far enough for the gold score to turn down. With more data and longer "
        "runs they do: a reward model trained on "
        f"{workshop.OVEROPT_PAIRS} simulated pairs, and {workshop.overopt_ppo_config(model).steps}-step runs at a "
        "constant learning rate. At β = 0 the gold score rose with the reward model's score, peaked, and then "
        "fell while the reward model's score kept rising: the policy had found a way of writing that the "
        "reward model likes more than the annotator does. Larger β keep the policy near the reference and "
        "stop short of it (numbers in `benchmarks/RESULTS.md`).")
    figure = Path(__file__).resolve().parents[1] / "docs" / "overopt-gold-vs-proxy.png"
    if figure.is_file():
        st.image(str(figure), caption="Measured on 2 CPU cores: gold (dashed) and reward-model score (solid) "
                                      "against √KL; the star marks where the gold score peaked.")
    st.markdown(
        f"On the pages: **Preferences** — simulate {workshop.OVEROPT_PAIRS} pairs; **Reward model** — "
        f"{workshop.overopt_reward_config(model).steps} steps, mean pooling; **KL sweep** — the *over-optimisation "
        "preset* button, then queue. Or from a terminal, one command per step:")
    st.code("\n".join(workshop.cli_commands(preset="overopt")), language="bash")

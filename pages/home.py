"""Home: the RLHF loop as a picture, and where this project stands on each step."""

import streamlit as st

from dashboard.room import identity, personal_link_notice
from dashboard.state import require_app_shell, workspace
from dashboard.widgets import STATE_ICONS, md, queue_notice, workspace_download
from rlhf_engine.core.models import describe_model
from rlhf_engine.lab import workshop
from rlhf_engine.methods import registry

require_app_shell()

LOOP = """
digraph {
  rankdir=LR; node [shape=box, style="rounded,filled", fillcolor="#eef3fb", fontname="sans-serif"];
  edge [fontname="sans-serif", fontsize=10];
  base [label="1. Pretrained model\\n(policy at start = reference)"];
  prefs [label="2. Preference pairs\\n(prompt, chosen, rejected)", fillcolor="#fff7e6"];
  rm [label="3. Reward model\\nQLoRA + Bradley–Terry"];
  ppo [label="4. METHODS\\nmaximise score − β·KL(policy‖reference)"];
  tuned [label="Tuned policy", fillcolor="#eaf7ea"];
  base -> rm [label="same base"]; prefs -> rm; base -> ppo [label="policy + frozen reference"];
  rm -> ppo [label="scores"]; ppo -> tuned;
}
"""
TITLES = [method.title for method in registry.methods().values()]  # every policy-training method, built-in first
HEADING = f"4. {TITLES[0]}" + (f" (or {', '.join(TITLES[1:])})" if len(TITLES) > 1 else "")

ws = workspace()
who = identity()
st.title("RLHF Workbench")
if who.role == "alone":
    st.caption(f"Workspace: `{ws.root}` — everything below is read from it, so a reload or restart loses nothing.")
else:
    personal_link_notice(who)
    st.caption("Your workspace in the room: your model choice, pairs and runs, seen by you and the teacher only.")
workspace_download(ws)
# The minutes are the preset's, the figure the Workshop page shows, so the two pages agree when it changes
st.page_link("pages/workshop.py", label=f"New to RLHF? The Workshop: five steps, about {workshop.preset().minutes} "
             "minutes", icon=":material/school:")
st.graphviz_chart(LOOP.replace("METHODS", " / ".join(TITLES).replace('"', "'")))
queue_notice()

col_model, col_pairs, col_rm, col_ppo = st.columns(4)
with col_model:
    st.subheader("1. Model")
    config = ws.model_config()
    chosen = "chosen" if ws.model_chosen() else "the default until you choose one"
    st.write(f"{md(describe_model(config))}; {chosen}.")  # a hub id keeps its case, so no capital
    st.page_link("pages/model.py", label="Choose or try the model", icon=":material/neurology:")
with col_pairs:
    st.subheader("2. Preference pairs")
    st.metric("pairs stored", ws.store().count())
    st.page_link("pages/preferences.py", label="Upload or make pairs", icon=":material/balance:")
with col_rm:
    st.subheader("3. Reward model")
    rms = ws.runs_of("reward_model")
    done = [r for r in rms if r.status().get("state") == "completed"]
    st.metric("reward models trained", len(done))
    for run in rms[:3]:
        st.caption(f"{STATE_ICONS.get(run.status()['state'], '')} {md(run.id)} — {run.status()['state']}")
    st.page_link("pages/reward_model.py", label="Train and evaluate", icon=":material/military_tech:")
with col_ppo:
    st.subheader(HEADING)
    policy_runs = ws.runs_of(*registry.names())  # every method's, newest first
    st.metric("policy runs", len(policy_runs))
    for run in policy_runs[:3]:
        status = run.status()
        st.caption(f"{STATE_ICONS.get(status['state'], '')} {md(run.id)} — {status['state']}, "
                   f"step {status.get('step', 0)}/{status.get('total_steps', '?')}")
    st.page_link("pages/ppo.py", label="Fine-tune the policy", icon=":material/autorenew:")
st.page_link("pages/sweep.py", label="Sweep β: reward vs KL, gold vs proxy, best-of-n", icon=":material/tune:")
st.page_link("pages/runs.py", label="Compare all runs", icon=":material/monitoring:")

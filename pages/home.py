"""Home: the RLHF loop and where this project stands (runs are read from the run folders)."""

from pathlib import Path

import streamlit as st

from rlhf_engine.runfolder import list_runs

RUNS_ROOT = Path("runs")

st.title("RLHF Workbench")
st.markdown(
    "1. **Pretrained model** — the bundled SmolLM2-135M-Instruct works offline.\n"
    "2. **Reward model** — learned from preference pairs (QLoRA, Bradley–Terry loss).\n"
    "3. **PPO** — the policy is tuned against the reward, with a KL penalty to the reference model."
)
st.info("The interactive pages are coming next. Meanwhile every step runs from the command line: "
        "`python -m rlhf_engine --help`.")
runs = list_runs(RUNS_ROOT)
st.subheader(f"Runs in {RUNS_ROOT}/")
if not runs:
    st.write("No runs yet.")
for run in runs:
    status = run.status()
    st.text(f"{run.id}: {run.config().get('kind', '?')} — {status['state']} "
            f"(step {status.get('step', 0)}/{status.get('total_steps', '?')})")

"""RLHF Workbench dashboard entry point (`make run`). Pages live in pages/, one file each."""

from pathlib import Path

import streamlit as st

from dashboard.state import APP_SHELL_KEY

# A local favicon: a page's material icon as favicon would be fetched from fonts.gstatic.com (offline rooms)
FAVICON = Path(__file__).parent / "dashboard" / "favicon.png"
st.set_page_config(page_title="RLHF Workbench", page_icon=str(FAVICON), layout="wide")
st.session_state[APP_SHELL_KEY] = True  # pages check it: see dashboard.state.require_app_shell
PAGES = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/workshop.py", title="Workshop", icon=":material/school:"),
    st.Page("pages/model.py", title="Model", icon=":material/neurology:"),
    st.Page("pages/preferences.py", title="Preferences", icon=":material/balance:"),
    st.Page("pages/reward_model.py", title="Reward model", icon=":material/military_tech:"),
    st.Page("pages/ppo.py", title="Policy training", icon=":material/autorenew:"),
    st.Page("pages/sweep.py", title="KL sweep", icon=":material/tune:"),
    st.Page("pages/runs.py", title="Runs", icon=":material/monitoring:"),
]
st.navigation(PAGES).run()

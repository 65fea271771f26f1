"""RLHF Workbench dashboard entry point (`make run`). Pages live in pages/, one file each."""

import streamlit as st

st.set_page_config(page_title="RLHF Workbench", layout="wide")
PAGES = [
    st.Page("pages/home.py", title="Home", icon="🏠", default=True),
    st.Page("pages/model.py", title="Model", icon="🧠"),
    st.Page("pages/preferences.py", title="Preferences", icon="⚖️"),
    st.Page("pages/reward_model.py", title="Reward model", icon="🏅"),
    st.Page("pages/ppo.py", title="PPO", icon="🔁"),
    st.Page("pages/runs.py", title="Runs", icon="📈"),
]
st.navigation(PAGES).run()

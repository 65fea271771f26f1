"""RLHF Workbench dashboard entry point (`make run`). Pages live in pages/, one file each."""

import streamlit as st

st.set_page_config(page_title="RLHF Workbench", layout="wide")
navigation = st.navigation([st.Page("pages/home.py", title="Home", default=True)])
navigation.run()

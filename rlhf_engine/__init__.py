"""RLHF Workbench engine: models, preference data, reward model, PPO, background jobs, CLI.

Pure Python; never imports Streamlit. The dashboard talks to it through run folders and job handles.
"""

__version__ = "0.1.0"

"""RLHF Workbench engine: pure Python, never imports Streamlit. The dashboard and the CLI talk to it through run
folders and job handles.

- ``config``: every setting as a dataclass, defaults from the literature, one comment per field.
- ``methods``: PPO, GRPO, RLOO, DPO (one module each) and ``methods.registry``, the one list of them.
- ``core``: sampling and training (models, generation, the scored rollout, the policy, the trainer, the runs of a
  sweep side by side, the reward model, the LoRA and matmul kernels).
- ``lab``: the teaching lab (sweeps, best-of-n, alarms, figures, the report, the workshop, demo data).
- ``runs``: the run folder, jobs and their queue, resume, trackers, export.
- ``data``: preference pairs and prompts (files, hub datasets, the pair store, collecting by hand).
- ``cli``: ``python -m rlhf_engine ...``.
"""

__version__ = "0.1.0"

"""The teaching lab, built on runs: sweeps (runs that differ in one setting, or in their method, over seeds) and
their job, the best-of-n baseline, what the runs showed in sentences (story, noise, method ranking, Gao et al.'s
fitted curves), plain-language alarms, every plotly figure and how each run looks on it (shared by the pages and
the report), the one-file HTML report, the workshop's presets, and the demo data (prompts and the gold annotator).
"""

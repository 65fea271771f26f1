"""The teaching lab, built on runs: sweeps (runs that differ in one setting, or in their method) and their
job, the best-of-n baseline, plain-language alarms, every plotly figure (shared by the pages and the report),
the one-file HTML report, the workshop's presets, and the demo data (prompts and the gold annotator).
"""

"""Preference pairs and prompts: reading and checking pair files in every shape (CSV, JSONL, Parquet, a
datasets folder, a hub dataset), writing them, the SQLite pair store the dashboard collects into, and
collecting pairs by hand.
"""

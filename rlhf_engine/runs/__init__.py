"""Runs and jobs: the run folder (the one record of a run, that every page and command reads), a workspace (one
project's files), a job in a thread or a process of its own, the queue, the job of each kind of run (reward model,
policy, a group of several people's policy runs side by side), the runs one job trains (members), resume,
experiment trackers, and export of a run's model for plain transformers.
"""

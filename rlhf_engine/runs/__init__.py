"""Runs and jobs: the run folder (the one record of a run, that every page and command reads), a job in a
thread or a process of its own, the queue, the job of each kind of run (reward model, policy), resume,
experiment trackers, and export of a run's model for plain transformers.
"""

"""The policy-training methods, one module each, and ``registry``, the one list of them.

A method is its advantages and loss as pure tensor functions (each with its formula) and a thin trainer,
a ``core.trainer.PolicyTrainer`` subclass; its settings are a ``config.PolicyConfig`` subclass. ``registry``
holds one record per method (config, trainer, title, panels, followed metrics, whether it learns from
pairs) that the CLI, the jobs, the sweeps, export, the figures, the report and the pages all read.
"""

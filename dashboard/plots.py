"""The dashboard's figures. The engine builds them (``rlhf_engine.lab.figures``), so the one-file HTML report
draws exactly what the pages show."""

from rlhf_engine.lab.figures import *  # noqa: F401,F403

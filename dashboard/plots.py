"""The dashboard's figures. The engine builds them (``rlhf_engine.figures``), so the one-file HTML report
draws exactly what the pages show."""

from rlhf_engine.figures import *  # noqa: F401,F403

"""benchmarks/st_client.py, the load benchmark's light participant, against the real dashboard on the loopback:
it speaks Streamlit's browser protocol well enough to draw Home and change page, with no exception shown."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from browser import dashboard_server

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from st_client import StreamlitSession  # noqa: E402


@pytest.mark.slow
def test_the_light_client_draws_home_and_the_runs_page(tmp_path):
    async def visit(url):
        async with StreamlitSession(url, timeout_s=60) as session:
            return await session.rerun(), await session.rerun(page="Runs"), session

    (tmp_path / "ws" / "runs").mkdir(parents=True)
    with dashboard_server(tmp_path / "ws", tmp_path / "streamlit.log") as url:
        home, runs, session = asyncio.run(visit(url))

    assert home.status == "FINISHED_SUCCESSFULLY" and home.ok, home.errors
    assert home.shows("RLHF Workbench") and home.elapsed_s > 0
    assert runs.ok and runs.shows("No runs"), (runs.errors, runs.texts)
    assert session.page == session.pages["Runs"] != home.page  # the page change went through

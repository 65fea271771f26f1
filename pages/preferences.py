"""Preferences: upload pairs, collect them by picking A or B, simulate them, browse and export the store."""

import random
import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard.state import generating_model, refresh_interval, require_app_shell, workspace
from dashboard.widgets import (
    engine_errors,
    flash,
    job_controls,
    md,
    queue_notice,
    rerun_when_finished,
    show_flash,
    status_line,
    submit_job,
)
from rlhf_engine.config import RewardConfig
from rlhf_engine.core.reward import split_pairs
from rlhf_engine.data import collect
from rlhf_engine.data.errors import DataError
from rlhf_engine.data.hub import hub_dataset
from rlhf_engine.data.pairs import prompt_text, read_pairs, write_pairs
from rlhf_engine.lab.demo import demo_prompt_split
from rlhf_engine.lab.demo_job import DEMO_PAIRS_KIND, prepare_demo_pairs_job
from rlhf_engine.runs.runfolder import RunFolder, new_run_name, safe_name

require_app_shell()

K = "preferences"  # the page's widget and session keys
PREVIEW_ROWS = 20
PAGE_SIZE = 50
ws = workspace()
store = ws.store()

st.title("Preferences")
show_flash()


def split_sentence(n_pairs: int) -> str:
    """How a reward model uses the stored pairs: it trains on most and holds some out, because its accuracy is
    only worth reading on pairs it never saw. The counts come from the split the Reward model page's training
    makes (``split_pairs`` at the default held-out share), so the sentence and the run agree."""
    if n_pairs < 2:
        return "A reward model needs at least 2: it trains on some and holds at least one out to measure its accuracy."
    train, held_out = split_pairs(range(n_pairs), RewardConfig().eval_fraction, seed=0)  # counts do not need a seed
    return (f"A reward model trained on them learns from {len(train)} and holds out the other "
            f"{len(held_out)} ({len(held_out) / n_pairs:.0%}) to measure its accuracy on pairs it never saw.")


st.caption(f"**{store.count()}** pairs stored in `{ws.store_path.name}`. {split_sentence(store.count())}")
upload_tab, collect_tab, simulate_tab, browse_tab = st.tabs(["Upload", "Collect", "Simulate", "Browse & export"])


def pairs_frame(pairs):
    return pd.DataFrame([{"prompt": prompt_text(p.prompt), "chosen": p.chosen, "rejected": p.rejected}
                         for p in pairs])


def offer_pairs(pairs, label: str, source: str, identity: str, key: str, stored_note: str) -> None:
    """Preview valid pairs and an Add button that stores them once (``identity``: what was stored already)."""
    stored = st.session_state.setdefault(f"{K}.stored_{key}", set())
    if identity in stored:
        st.info(f"{md(label)} is stored ({len(pairs)} pairs). {stored_note}")
        return
    st.success(f"{md(label)}\\: {len(pairs)} valid pairs.")  # an escaped colon: "…:train:" is no emoji code
    st.dataframe(pairs_frame(pairs[:PREVIEW_ROWS]), hide_index=True)
    if st.button(f"Add {len(pairs)} pairs to the store", type="primary", key=f"{K}.{key}.add"):
        with engine_errors("Storing the pairs"):
            store.add_many(pairs, source=source)
            stored.add(identity)  # a second click cannot store them twice
            flash(f"Stored {len(pairs)} pairs from {md(label)}.")


@st.cache_data(show_spinner="Reading the dataset…", max_entries=4)
def hub_pairs(name: str):
    """A hub dataset's pairs, read once per session's id (a large dataset takes seconds)."""
    return read_pairs(name)


# --------------------------------------------------------------------------------------------- upload
with upload_tab:
    st.write("A CSV, JSONL or Parquet file with columns `prompt`, `chosen`, `rejected` (or conversational "
             "message lists, or full chosen/rejected transcripts sharing a prefix).")
    uploaded = st.file_uploader("Pairs file", type=["csv", "jsonl", "json", "parquet"], key=f"{K}.upload")
    limit_mb = st.get_option("server.maxUploadSize")
    if uploaded is not None and uploaded.size > limit_mb * 2**20:  # the browser checks too; this is the server
        st.error(f"{md(uploaded.name)}: {uploaded.size / 2**20:.1f} MB is over the upload limit of {limit_mb} MB. "
                 "Add a larger file from the command line: `python -m rlhf_engine pairs add FILE`.")
    elif uploaded is not None:
        try:
            name = safe_name(Path(uploaded.name).name, "file name")
        except ValueError:
            name = "upload" + Path(uploaded.name).suffix.lower()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_bytes(uploaded.getvalue())
            try:
                pairs = read_pairs(path)
            except DataError as err:
                pairs = None
                where = f"row {err.row}: " if err.row is not None else ""
                st.error(md(f"{uploaded.name}: {where}{err.problem}"))
        if pairs is not None:
            offer_pairs(pairs, uploaded.name, f"upload:{uploaded.name}", uploaded.file_id, "upload",
                        "Remove it above to upload another file.")
    st.write("…or a preference dataset from the Hugging Face hub by its id, read from this machine's Hugging Face "
             "cache (downloaded first where the hub can be reached), with a split and an optional slice.")
    hub_name = st.text_input("Hub dataset (ORG/NAME[:split])", key=f"{K}.hub",
                             placeholder="trl-lib/ultrafeedback_binarized:train[:1000]").strip()
    if hub_name:
        if hub_dataset(hub_name) is None:
            st.error(f"{md(hub_name)} is not a hub dataset id: ORG/NAME, optionally :split "
                     "(e.g. Anthropic/hh-rlhf:test).")
        else:
            try:
                pairs = hub_pairs(hub_name)
            except DataError as err:
                st.error(md(str(err)))
            else:
                offer_pairs(pairs, hub_name, f"hub:{hub_name}", hub_name, "hub", "")

# --------------------------------------------------------------------------------------------- collect
with collect_tab:
    st.write("The model writes two answers; pick the better one. A or B is stored at once. "
             "Tie and skip store nothing (a tie carries no preference for the Bradley–Terry loss).")
    prompts = demo_prompt_split()[0]
    col_pick, col_type = st.columns(2)
    picked = col_pick.selectbox("Pick a prompt", prompts, key=f"{K}.collect.pick")
    typed = col_type.text_input("…or type your own", key=f"{K}.collect.typed")
    if st.button("Write two answers", key=f"{K}.collect.generate"):
        prompt = typed.strip() or picked
        with engine_errors("Generating"), st.spinner("The model is writing two answers…"):
            config = ws.model_config()
            with generating_model(config) as (model, tokenizer):
                answers = collect.two_answers(model, tokenizer, prompt, chat_template=config.chat_template)
            st.session_state[f"{K}.candidate"] = {"prompt": prompt, "answers": list(answers)}
    candidate = st.session_state.get(f"{K}.candidate")
    if candidate:
        st.markdown("**Prompt**")
        st.text(candidate["prompt"])
        col_a, col_b = st.columns(2)
        for col, label, text in ((col_a, "A", candidate["answers"][0]), (col_b, "B", candidate["answers"][1])):
            col.markdown(f"**{label}**")
            col.text(text)
        buttons = st.columns(4)
        labels = {"a": "A is better", "b": "B is better", "tie": "Tie", "skip": "Skip"}
        choice = next((pick for col, (pick, label) in zip(buttons, labels.items())
                       if col.button(label, key=f"{K}.collect.{label}")), None)
        if choice:
            try:
                pair = collect.picked_pair(candidate["prompt"], *candidate["answers"], pick=choice)
            except ValueError as err:  # A or B between two identical answers
                st.warning(f"{md(err)}.")
            else:
                if pair is None:
                    st.info(f"{labels[choice]}: nothing stored.")
                else:
                    with engine_errors("Storing the pair"):
                        st.success(f"Stored pair #{store.add(pair, source=collect.SOURCE)}.")
            st.session_state[f"{K}.candidate"] = None

# --------------------------------------------------------------------------------------------- simulate
with simulate_tab:
    st.write("Simulated pairs: the chosen model writes 4 completions per demo prompt and the **gold "
             "annotator** (VADER sentiment, minus a penalty for repeated phrases) pairs its favourite with its "
             "least favourite. The demo "
             "reward model then learns to prefer positive text. ~2.4 s per pair on 2 CPU cores.")
    n = st.number_input("pairs to make", 1, 5000, 64, step=16, key=f"{K}.simulate.n")
    if st.button("Make simulated pairs", key=f"{K}.simulate.start"):
        making = st.session_state.get(f"{K}.simulate.started")  # a double click must not start a second job
        if making and RunFolder(ws.runs / making).status().get("state") in ("queued", "running"):
            st.info(f"{md(making)} is still making pairs; stop it or let it finish (a second click starts nothing).")
        else:
            with engine_errors("Starting"):
                job = prepare_demo_pairs_job(ws.runs / new_run_name("pairs"), int(n), ws.store_path,
                                             ws.model_config(), seed=random.randrange(2**31))
                submit_job(job, f"{K}.simulate", f"{K}.simulate.name")
    queue_notice()

    def simulate_progress(run):
        status = run.status()
        rerun_when_finished(run)
        total = max(int(status.get("total_steps", 1)), 1)
        st.markdown(status_line(run))
        st.progress(min(int(status.get("step", 0)) / total, 1.0),
                    text=f"{status.get('step', 0)} of {total} pairs (stored together when all are made)")
        job_controls(run, f"{K}.simulate")

    simulate_runs = ws.runs_of(DEMO_PAIRS_KIND)
    if simulate_runs:
        st.fragment(simulate_progress, run_every=refresh_interval(simulate_runs[0]))(simulate_runs[0])

# --------------------------------------------------------------------------------------------- browse
with browse_tab:
    search = st.text_input("Filter (case-insensitive, prompt or answers)", key=f"{K}.browse.search")
    total = store.count(search or None)
    pages = max(1, (total + PAGE_SIZE - 1) // PAGE_SIZE)
    page = st.number_input(f"page (of {pages})", 1, pages, 1, key=f"{K}.browse.page")
    rows = store.list(limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE, search=search or None)
    st.caption(f"{total} matching pairs")
    if rows:
        frame = pd.DataFrame([{"id": r.id, "source": r.source, "prompt": prompt_text(r.pair.prompt),
                               "chosen": r.pair.chosen, "rejected": r.pair.rejected, "added": r.created_at}
                              for r in rows])
        st.dataframe(frame, hide_index=True)
        col_del, col_btn = st.columns([3, 1])
        to_delete = col_del.multiselect("Delete pairs (by id)", [r.id for r in rows], key=f"{K}.browse.delete")
        if col_btn.button("Delete selected", disabled=not to_delete, key=f"{K}.browse.delete_btn"):
            deleted = sum(store.delete(pid) for pid in to_delete)
            st.success(f"Deleted {deleted} pairs.")
            st.rerun()
    st.markdown("**Export every stored pair**")
    fmt = st.selectbox("Export format", ["jsonl", "csv", "parquet"], key=f"{K}.browse.format")
    if store.count() and st.button("Prepare export", key=f"{K}.browse.export"):
        with engine_errors("Export"), tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"pairs.{fmt}"
            write_pairs(store.all_pairs(), path)
            st.session_state[f"{K}.export"] = (path.name, path.read_bytes())
    if st.session_state.get(f"{K}.export"):
        name, data = st.session_state[f"{K}.export"]
        st.download_button(f"Download {name}", data, file_name=name, key=f"{K}.browse.download")

"""Room frontier: every participant's runs where they stand now, one colour per method and one marker per β, with
the best-of-n baseline beside; read-only, the same for the projector, the participants and the teacher."""

from dataclasses import replace
from pathlib import Path

import streamlit as st

from dashboard.room import current_room
from dashboard.state import require_app_shell
from dashboard.widgets import md
from rlhf_engine.lab import figures, styles
from rlhf_engine.lab.raised_alarms import alarm_titles
from rlhf_engine.methods import registry
from rlhf_engine.room.frontier import method_title, room_points, room_watch
from rlhf_engine.room.room import Room
from rlhf_engine.runs.runfolder import RunFolder

require_app_shell()

MARKDOWN_COLOURS = ("blue", "orange", "green", "violet")  # the method colours Streamlit's Markdown can draw
LIVE_REFRESH_S = 5.0  # seconds between redraws while a run of the room is live
IDLE_CHECK_S = 30.0  # otherwise, how often the page looks for a run that started (a projector stays open for hours)

room = current_room()
st.title("Room frontier")
if room is None:
    st.info("The room's frontier shows the runs of a workshop room (`make room`); alone, the KL sweep page draws "
            "your own.")
    st.stop()


@st.cache_data(max_entries=4, show_spinner=False)
def frontier_data(folder: str, signature: tuple) -> tuple[list[dict], list[dict]]:
    """``room_points``, read again only when a probe, a run's state or the names shown changed (``signature``):
    every open tab and the projector share one reading."""
    return room_points(Room(Path(folder)))


def held_out_note(points: list[dict]) -> str:
    """"the 54 held-out prompts", or "its held-out prompts (54 or 24)" when the runs probe different numbers."""
    counts = sorted({p["prompts"] for p in points})
    if len(counts) == 1:
        return f"the {counts[0]} held-out prompts"
    return f"its held-out prompts ({' or '.join(map(str, counts))})"


def alarms_by_label(points: list[dict]) -> dict[str, str]:
    """{label: the alarms its run raised, in words} for the points whose run raised any: read from each run's
    status at every redraw (cheap), not through ``frontier_data``'s cache, which only probes and states refresh."""
    found = {}
    for point in points:
        try:
            codes = RunFolder(room.workspace(point["pid"]).runs / point["run"]).status().get("alarms", [])
        except (OSError, ValueError):
            continue
        words = alarm_titles(codes)
        if words:
            found[point["label"]] = words
    return found


def point_styles(points: list[dict]) -> dict[str, styles.Style]:
    """{label: Style} of the room's points, the convention of every chart of runs (``styles.run_styles``: colour =
    the method, marker = the β; participants at one method and β told apart by shade), each named by its label: the
    participant as the teacher chose to show them, which the legend must not say more than."""
    return {label: replace(style, name=styles.plain(label)) for label, style in styles.run_styles(points).items()}


def who_is_where(points: list[dict], looks: dict[str, styles.Style], alarms: dict[str, str] | None = None) -> list[str]:
    """One line per method and β: the β's marker on the charts (``looks``: ``point_styles``) and who is there, with
    their numbers and the alarms their run raised (``alarms``: {label: words})."""
    alarms = alarms or {}
    groups: dict[tuple, list[dict]] = {}
    for point in points:
        beta = point.get("beta") if isinstance(point.get("beta"), (int, float)) else None
        groups.setdefault((point["method"], point.get("adaptive", False), beta), []).append(point)
    lines = []
    order = {name: i for i, name in enumerate(registry.names())}  # PPO first, as everywhere
    for (method, adaptive, beta), group in sorted(groups.items(), key=lambda item: (
            order.get(item[0][0], len(order)), item[0][1], item[0][2] or 0.0)):
        where = "; ".join(f"{md(p['who'])} (KL {p['kl']:.2f}, RM {p['score']:.2f}"
                          + (f", gold {p['gold']:.2f}" if "gold" in p else "")
                          + (f"; :orange[alarm: {md(alarms[p['label']])}]" if p["label"] in alarms else "") + ")"
                          for p in group)
        beta_text = "adaptive β" if adaptive else f"β = {beta:g}" if beta is not None else "β ?"
        marker = looks[group[0]["label"]].marker_char  # every point of the group has its β's marker
        title = f"**{md(method_title(method))}**"
        colour = styles.method_colour(method)[1]
        title = f":{colour}[{title}]" if colour in MARKDOWN_COLOURS else title  # in its colour on the charts
        lines.append(f"{marker} {title}, **{beta_text}**: {where}")
    return lines


def frontier() -> None:
    signature, live = room_watch(room)
    if st.session_state.get(LIVE_KEY) != live:  # a run started or the last one ended: the refresh rate follows
        st.rerun(scope="app")
    points, best_of_n = frontier_data(str(room.folder), signature)
    if not points:
        st.info("No run of the room has answered its held-out prompts yet: each run appears here at its first "
                "probe. " + ("Runs are training now; this page redraws itself." if live else ""))
        return
    looks = point_styles(points)
    col_reward, col_gold = st.columns(2)
    col_reward.plotly_chart(figures.frontier_figure(points, best_of_n, looks, gold=False), key="frontier.reward")
    series = {p["label"]: [{**p, "step": p["probe_step"]}] for p in points}
    col_gold.plotly_chart(figures.gold_proxy_figure(series, best_of_n, looks, proxy=False), key="frontier.gold")
    st.caption(f"Each point is one participant's run at its last probe on {held_out_note(points)} "
               "(the same prompts and sampling seed at every probe): where it stands now, not one training batch's "
               f"luck. {styles.style_key(looks.values(), lines=False)}. Left, the reward model's "
               "score ± 1 standard error (each participant's own reward model, trained on the same pairs); right, "
               "the gold score of the simulated annotator, the truth, ± 1 standard error, against √KL (Gao et al. "
               "2022)."
               + (f" Dotted: best-of-n from the reference ({md(best_of_n[0]['who'])}'s sweep), no training."
                  if best_of_n else ""))
    st.markdown("  \n".join(who_is_where(points, looks, alarms_by_label(points))))


LIVE_KEY = "frontier.live"
st.session_state[LIVE_KEY] = room_watch(room)[1]
st.fragment(frontier, run_every=LIVE_REFRESH_S if st.session_state[LIVE_KEY] else IDLE_CHECK_S)()

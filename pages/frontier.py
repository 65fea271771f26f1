"""Room frontier: every participant's runs where they stand now, one colour per method and one marker per β, with
the best-of-n baseline beside; read-only, the same for the projector, the participants and the teacher."""

from pathlib import Path

import streamlit as st

from dashboard.room import current_room
from dashboard.state import require_app_shell
from dashboard.widgets import md
from rlhf_engine.lab import figures
from rlhf_engine.methods import registry
from rlhf_engine.room.frontier import method_title, room_points, room_watch
from rlhf_engine.room.room import Room

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


def who_is_where(points: list[dict], markers: dict) -> list[str]:
    """One line per method and β: the β's marker (``figures.beta_markers``) and who is there, with their numbers."""
    groups: dict[tuple, list[dict]] = {}
    for point in points:
        beta = point.get("beta") if isinstance(point.get("beta"), (int, float)) else None
        groups.setdefault((point["method"], point.get("adaptive", False), beta), []).append(point)
    lines = []
    order = {name: i for i, name in enumerate(registry.names())}  # PPO first, as everywhere
    for (method, adaptive, beta), group in sorted(groups.items(), key=lambda item: (
            order.get(item[0][0], len(order)), item[0][1], item[0][2] or 0.0)):
        where = "; ".join(f"{md(p['who'])} (KL {p['kl']:.2f}, RM {p['score']:.2f}"
                          + (f", gold {p['gold']:.2f}" if "gold" in p else "") + ")" for p in group)
        beta_text = "adaptive β" if adaptive else f"β = {beta:g}" if beta is not None else "β ?"
        marker = markers[figures.beta_key(group[0])][1]  # every point of the group has its β
        title = f"**{md(method_title(method))}**"
        colour = figures.method_colour(method)[1]
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
    colours = {p["label"]: figures.method_colour(p["method"])[0] for p in points}
    markers = figures.beta_markers(points)
    symbols = {p["label"]: markers[figures.beta_key(p)][0] for p in points}
    marker_legend = ", ".join(f"{char} β = {beta:g}" if beta is not None else f"{char} adaptive β"
                              for beta, (_, char) in markers.items())
    methods = dict.fromkeys(p["method"] for p in points)
    colour_legend = ", ".join(f"{method_title(m)} {figures.method_colour(m)[1]}" for m in methods)
    col_reward, col_gold = st.columns(2)
    col_reward.plotly_chart(figures.frontier_figure(points, best_of_n, colours, symbols, gold=False),
                            key="frontier.reward")
    series = {p["label"]: [{**p, "step": p["probe_step"]}] for p in points}
    col_gold.plotly_chart(figures.gold_proxy_figure(series, best_of_n, colours, symbols, proxy=False),
                          key="frontier.gold")
    st.caption(f"Each point is one participant's run at its last probe on {held_out_note(points)} "
               "(the same prompts and sampling seed at every probe): where it stands now, not one training batch's "
               f"luck. Colour: the method ({colour_legend}); marker: β ({marker_legend}). Left, the reward model's "
               "score ± 1 standard error (each participant's own reward model, trained on the same pairs); right, "
               "the gold score of the simulated annotator, the truth, ± 1 standard error, against √KL (Gao et al. "
               "2022)."
               + (f" Dotted: best-of-n from the reference ({md(best_of_n[0]['who'])}'s sweep), no training."
                  if best_of_n else ""))
    st.markdown("  \n".join(who_is_where(points, markers)))


LIVE_KEY = "frontier.live"
st.session_state[LIVE_KEY] = room_watch(room)[1]
st.fragment(frontier, run_every=LIVE_REFRESH_S if st.session_state[LIVE_KEY] else IDLE_CHECK_S)()

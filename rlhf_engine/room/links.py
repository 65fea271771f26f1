"""The room's links: where participants reach the server, the three role links, a participant's personal link,
and a QR code of a link for the projector.

The launcher (``python -m rlhf_engine room``) prints the links and hands the base URL it printed to the Streamlit
server in ``RLHF_ROOM_URL``, so the dashboard shows the very links the terminal showed. Finding the LAN address
sends no packet: connecting a UDP socket only picks the route and the local address that goes with it.
"""

from __future__ import annotations

import io
import os
import socket
from pathlib import Path
from urllib.parse import urlencode

# The query parameters of the links (the dashboard reads them from st.query_params).
ROOM_PARAM = "room"  # the participants' link: the room's participant token
TEACHER_PARAM = "teacher"  # the teacher's link: the teacher token
VIEW_PARAM = "view"  # the projector's link: the projector token
PERSONAL_PARAM = "p"  # a participant's personal link: their own secret

# What the launcher hands the server.
ROOM_ENV = "RLHF_ROOM"  # the room's folder
URL_ENV = "RLHF_ROOM_URL"  # the base URL the launcher printed
SLOTS_ENV = "RLHF_ROOM_SLOTS"  # the room's job slots, when given
RAY_ENV = "RLHF_ROOM_RAY"  # the Ray cluster the room's jobs run on ("auto" or HOST:PORT), when given

DEFAULT_FOLDER = "room"  # relative to the working directory, when RLHF_ROOM is not set
DEFAULT_PORT = 8501
_PROBE = ("10.255.255.255", 1)  # a private address: a UDP connect to it picks the LAN route, sends nothing


def lan_address() -> str:
    """This machine's address on its LAN, as participants reach it; ``127.0.0.1`` when it has none.

    No traffic leaves the machine: ``connect`` on a UDP socket sends no packet.
    """
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(_PROBE)
            address = probe.getsockname()[0]
        if address and address != "0.0.0.0":
            return address
    except OSError:  # no route (no network at all)
        pass
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def base_url(host: str, port: int, https: bool) -> str:
    """``http[s]://host:port``, without the port when it is the scheme's own (80, 443); an IPv6 host bracketed."""
    scheme = "https" if https else "http"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    default = 443 if https else 80
    return f"{scheme}://{host}" if int(port) == default else f"{scheme}://{host}:{int(port)}"


def _link(base: str, param: str, value: str) -> str:
    return f"{base.rstrip('/')}/?{urlencode({param: value})}"


def room_links(room, base: str) -> dict[str, str]:
    """The room's three links: ``participants`` (to join), ``teacher`` (never on the projector), ``projector``."""
    return {"participants": _link(base, ROOM_PARAM, room.token("participant")),
            "teacher": _link(base, TEACHER_PARAM, room.token("teacher")),
            "projector": _link(base, VIEW_PARAM, room.token("projector"))}


def personal_link(base: str, participant) -> str:
    """A participant's own link: their secret, which maps to their workspace."""
    return _link(base, PERSONAL_PARAM, participant.secret)


def qr_png(text: str) -> bytes:
    """A PNG of the QR code of ``text``, large enough to scan off a projector (10 pixels a module, 4 of border)."""
    import segno

    out = io.BytesIO()
    segno.make_qr(text, error="m").save(out, kind="png", scale=10, border=4)
    return out.getvalue()


def room_base_url() -> str:
    """The server's base URL: what the launcher printed (``RLHF_ROOM_URL``), else the LAN address on port 8501."""
    return os.environ.get(URL_ENV, "").rstrip("/") or base_url(lan_address(), DEFAULT_PORT, False)


def room_folder() -> Path:
    """The room's folder: ``RLHF_ROOM``, else ``room`` in the working directory."""
    return Path(os.environ.get(ROOM_ENV) or DEFAULT_FOLDER)

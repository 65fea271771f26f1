"""``python -m rlhf_engine room``: open a workshop room, print its links, then serve the dashboard to the room.

The server listens on every interface (``--address``, default 0.0.0.0) because participants join from their own
machines; the links carry the room's tokens, so only people given a link get in. With ``--cert`` and ``--key`` the
server speaks HTTPS and the tokens do not cross the network in the clear.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from rlhf_engine.room import links

from .errors import UserError
from .flags import positive_int

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _port(text: str) -> int:
    import argparse

    port = positive_int(text)
    if port > 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port (1-65535)")
    return port


def add_room_command(sub) -> None:
    """The ``room`` command and its flags."""
    p = sub.add_parser("room", help="open a workshop room, print its links and serve the dashboard to the room")
    p.add_argument("--folder", type=Path,
                   help=f"the room's folder (default ${links.ROOM_ENV}, else {links.DEFAULT_FOLDER}/); "
                        "reopening it gives the same links")
    p.add_argument("--new", action="store_true",
                   help="a new room with new links; the old folder is moved aside, nothing is deleted")
    p.add_argument("--port", type=_port, default=links.DEFAULT_PORT, help=f"(default {links.DEFAULT_PORT})")
    p.add_argument("--address", default="0.0.0.0",
                   help="the address the server listens on (default 0.0.0.0: every interface, so that the room "
                        "can reach it)")
    p.add_argument("--room-host", metavar="NAME",
                   help="the host name or address in the links (default: this machine's LAN address)")
    p.add_argument("--cert", type=Path, help="TLS certificate file (PEM): serve HTTPS; needs --key")
    p.add_argument("--key", type=Path, help="TLS private key file (PEM); needs --cert")
    p.add_argument("--slots", type=positive_int, metavar="K", help="how many of the room's jobs run at once")
    p.add_argument("--ray", metavar="ADDRESS",
                   help="run the room's jobs as Ray tasks: 'auto' starts a local Ray in the server, HOST:PORT joins "
                        "a running cluster (its token in RAY_AUTH_TOKEN; the room's folder must lie on a filesystem "
                        "every node sees); the slots are then sized from the cluster")
    p.add_argument("--dry-run", action="store_true", help="print the links and the server's command, start nothing")


def _tls_files(cert: Path | None, key: Path | None) -> tuple[Path, Path] | None:
    """Both TLS files, checked readable; None for plain HTTP. UserError for one without the other or a bad file."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise UserError("--cert and --key go together: give both for HTTPS, or neither")
    for flag, path in (("--cert", cert), ("--key", key)):
        if not path.is_file() or not os.access(path, os.R_OK):
            raise UserError(f"{flag} {path}: no such readable file")
    return cert.resolve(), key.resolve()


def _project_root() -> Path:
    import rlhf_engine

    root = Path(rlhf_engine.__file__).resolve().parents[1]
    if not (root / "app.py").is_file():
        raise UserError(f"no app.py in {root}: the room serves the dashboard, run it from a checkout")
    return root


def server_command(args, tls: tuple[Path, Path] | None) -> list[str]:
    """The Streamlit command line that serves the dashboard to the room."""
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.address", args.address,
           "--server.port", str(args.port)]
    if tls:
        cmd += ["--server.sslCertFile", str(tls[0]), "--server.sslKeyFile", str(tls[1])]
    return cmd + ["--server.headless", "true", "--browser.gatherUsageStats", "false"]


def _check_cluster(address: str, folder: Path) -> None:
    """The cluster checked before the links are printed, so that an unreachable one, a refused token or a folder
    its nodes cannot see is the user's one line (exit 2), not an error on the teacher's page: joined once here and
    left (the server joins it again). "auto" needs only Ray installed: the server starts it."""
    import importlib.util

    from rlhf_engine.cluster.connect import LOCAL, ClusterError, check_shared_folder, connect, disconnect, require_ray

    try:
        if address == LOCAL:
            if importlib.util.find_spec("ray") is None:
                require_ray()  # says how to install it
            print("ray: a local Ray, started by the server on this machine", flush=True)
            return
        cluster = connect(address)
        try:
            check_shared_folder(folder)
        finally:
            disconnect()
    except ClusterError as err:
        raise UserError(str(err)) from None
    print(f"ray: {cluster.describe()}", flush=True)


def _moved_aside(folder: Path, before: set[Path]) -> list[Path]:
    return sorted(set(folder.parent.glob(f"{folder.name}-*")) - before)


def room(args) -> int:
    """Open the room, print its links, and replace this process with the Streamlit server (or, with --dry-run,
    print its command line and return)."""
    from rlhf_engine.room.room import Room

    tls = _tls_files(args.cert, args.key)
    root = _project_root()
    folder = Path(args.folder or links.room_folder()).resolve()
    address = (args.ray or "").strip()
    if args.ray is not None and not address:
        raise UserError("--ray needs an address: 'auto' (a local Ray in the server) or HOST:PORT of a cluster")
    before = set(folder.parent.glob(f"{folder.name}-*"))
    opened = Room.open(folder, new=args.new)
    if address:
        _check_cluster(address, opened.folder)
    host = args.room_host or (links.lan_address() if args.address in ("0.0.0.0", "::", "") else args.address)
    base = links.base_url(host, args.port, https=tls is not None)
    _print_links(opened, base, moved=_moved_aside(folder, before), https=tls is not None)

    env = {**os.environ, links.ROOM_ENV: str(opened.folder), links.URL_ENV: base}
    if args.slots:
        env[links.SLOTS_ENV] = str(args.slots)
    env.pop(links.RAY_ENV, None)  # only --ray puts the room on a cluster
    if address:
        env[links.RAY_ENV] = address
    cmd = server_command(args, tls)
    if args.dry_run:
        shown = {k: env[k] for k in (links.ROOM_ENV, links.URL_ENV, links.SLOTS_ENV, links.RAY_ENV)
                 if k in env}
        print("server (dry run, not started):")
        print(f"  cd {shlex.quote(str(root))} && " + " ".join(f"{k}={shlex.quote(v)}" for k, v in shown.items())
              + " " + shlex.join(cmd))
        return 0
    sys.stdout.flush()
    sys.stderr.flush()
    os.chdir(root)
    os.execve(sys.executable, cmd, env)  # never returns


def _print_links(opened, base: str, moved: list[Path], https: bool) -> None:
    found = links.room_links(opened, base)
    print(f"room: {opened.folder}")
    for old in moved:
        print(f"  the previous room was moved aside to {old}")
    print(f"  participants: {found['participants']}")
    print(f"  projector:    {found['projector']}")
    print(f"  teacher:      {found['teacher']}")
    print("Keep the teacher's link off the projector: it opens everyone's work and the room's settings.")
    print("The same folder gives the same links next time; --new makes a new room with new links.")
    if not https:
        print("Plain HTTP: the links' tokens cross the network unencrypted (give --cert and --key for HTTPS).")

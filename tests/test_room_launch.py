"""Starting a workshop room: `python -m rlhf_engine room` prints the room's three links (the same ones on every
start, new ones with --new), refuses half a TLS setup in one line, and serves the dashboard over HTTPS.

No model is loaded; every connection goes to 127.0.0.1.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from browser import ROOT, free_port, stop_process

from rlhf_engine.cli import main
from rlhf_engine.room import links
from rlhf_engine.room.room import Room

LINK = re.compile(r"^\s+(participants|projector|teacher):\s+(\S+)$", re.MULTILINE)


def dry_run(capsys, *flags: str) -> tuple[int, dict[str, str], str]:
    """Run the command with --dry-run in this process: its exit code, its links by role, its whole output."""
    code = main(["room", "--dry-run", *flags])
    out = capsys.readouterr().out
    return code, dict(LINK.findall(out)), out


def test_a_dry_run_prints_three_links_with_three_tokens_on_the_given_host(tmp_path, capsys):
    code, found, out = dry_run(capsys, "--folder", str(tmp_path / "room"), "--room-host", "ws.example",
                               "--port", "8600", "--slots", "3")
    assert code == 0 and set(found) == {"participants", "projector", "teacher"}
    params = {}
    for role, url in found.items():
        parts = urlsplit(url)
        assert (parts.scheme, parts.netloc, parts.path) == ("http", "ws.example:8600", "/")
        params[role] = parse_qs(parts.query)
    assert set(params["participants"]) == {links.ROOM_PARAM} and set(params["teacher"]) == {links.TEACHER_PARAM}
    assert set(params["projector"]) == {links.VIEW_PARAM}
    tokens = {p[name][0] for p in params.values() for name in p}
    assert len(tokens) == 3  # three different tokens
    room = Room(tmp_path / "room")
    assert {room.role_of(t) for t in tokens} == {"participant", "teacher", "projector"}
    assert "teacher's link off the projector" in out and "--new" in out
    # the server's command and environment: every interface, the room's folder, the printed URL, the slots
    assert "--server.address 0.0.0.0 --server.port 8600" in out and "--server.headless true" in out
    assert f"RLHF_ROOM={room.folder}" in out and "RLHF_ROOM_URL=http://ws.example:8600" in out
    assert "RLHF_ROOM_SLOTS=3" in out and "sslCertFile" not in out


def test_a_second_start_prints_the_same_links_and_new_makes_new_ones_keeping_the_old_room(tmp_path, capsys):
    folder = tmp_path / "room"
    first = dry_run(capsys, "--folder", str(folder), "--room-host", "ws.example")[1]
    assert dry_run(capsys, "--folder", str(folder), "--room-host", "ws.example")[1] == first
    code, renewed, out = dry_run(capsys, "--folder", str(folder), "--room-host", "ws.example", "--new")
    assert code == 0 and set(renewed) == set(first)
    assert all(renewed[role] != first[role] for role in first)
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("room-")]
    assert len(aside) == 1 and str(aside[0]) in out
    old = Room(aside[0])  # the old room is kept whole, its tokens too
    assert links.room_links(old, "http://ws.example:8501") == first


def test_the_room_folder_defaults_to_rlhf_room(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(links.ROOM_ENV, str(tmp_path / "elsewhere"))
    assert dry_run(capsys, "--room-host", "h")[0] == 0
    assert (tmp_path / "elsewhere" / "room.json").is_file()


def test_the_links_use_https_with_a_certificate_and_key(tmp_path, capsys):
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("cert")  # only checked readable here; the real server test uses real ones
    key.write_text("key")
    code, found, out = dry_run(capsys, "--folder", str(tmp_path / "room"), "--room-host", "h", "--port", "443",
                               "--cert", str(cert), "--key", str(key))
    assert code == 0 and all(url.startswith("https://h/?") for url in found.values())
    assert f"--server.sslCertFile {cert}" in out and f"--server.sslKeyFile {key}" in out


@pytest.mark.parametrize("given, words", [
    (["--cert", "{c}"], "--cert and --key go together"),
    (["--key", "{c}"], "--cert and --key go together"),
    (["--cert", "{c}", "--key", "{missing}"], "--key"),
    (["--cert", "{missing}", "--key", "{c}"], "--cert"),
])
def test_half_a_tls_setup_is_one_line_and_exit_2(tmp_path, capsys, given, words):
    (tmp_path / "c.pem").write_text("x")
    names = {"c": tmp_path / "c.pem", "missing": tmp_path / "missing.pem"}
    flags = [g.format(**names) for g in given]
    assert main(["room", "--dry-run", "--folder", str(tmp_path / "room"), *flags]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1 and words in captured.err
    assert not (tmp_path / "room").exists()  # nothing made before the mistake is reported


def test_personal_link_and_base_url():
    assert links.base_url("10.0.0.5", 8501, False) == "http://10.0.0.5:8501"
    assert links.base_url("ws", 443, True) == "https://ws"
    assert links.base_url("fe80::1", 8501, True) == "https://[fe80::1]:8501"

    class Someone:
        secret = "s3cr-et_x"

    assert links.personal_link("http://h:1/", Someone()) == "http://h:1/?p=s3cr-et_x"


def test_room_base_url_is_what_the_launcher_set(monkeypatch):
    monkeypatch.setenv(links.URL_ENV, "https://ws.example:9000/")
    assert links.room_base_url() == "https://ws.example:9000"
    monkeypatch.delenv(links.URL_ENV)
    monkeypatch.setattr(links, "lan_address", lambda: "10.1.2.3")
    assert links.room_base_url() == "http://10.1.2.3:8501"


def test_the_qr_code_is_a_png_big_enough_to_project():
    png = links.qr_png("https://192.168.1.20:8501/?view=" + "x" * 24)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    assert width == height and 250 <= width <= 1000  # ~10 pixels a module, 4 modules of border


def test_lan_address_is_a_dotted_address_and_falls_back_to_loopback(monkeypatch):
    address = links.lan_address()
    socket.inet_aton(address)
    assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+", address)

    def no_network(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "gethostbyname", no_network)
    assert links.lan_address() == "127.0.0.1"


def _health(url: str, context: ssl.SSLContext) -> bytes | None:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2, context=context) as answer:
            return answer.read().strip()
    except OSError:
        return None


def test_the_command_serves_the_dashboard_over_https(tmp_path):
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    subprocess.run(["/usr/bin/openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=localhost"], check=True, capture_output=True,
                   timeout=60)
    port = free_port()
    log_path = tmp_path / "server.log"
    cmd = [sys.executable, "-m", "rlhf_engine", "room", "--folder", str(tmp_path / "room"), "--address",
           "127.0.0.1", "--port", str(port), "--cert", str(cert), "--key", str(key)]
    context = ssl._create_unverified_context()  # the self-signed certificate of this test
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                env={**_env(), "RLHF_WORKSPACE": str(tmp_path / "ws")})
    try:
        deadline = time.monotonic() + 60
        while (answer := _health(f"https://127.0.0.1:{port}", context)) != b"ok":
            assert proc.poll() is None, f"the server exited ({proc.returncode}): {log_path.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"no health answer: {log_path.read_text()[-2000:]}"
            time.sleep(0.2)
        assert answer == b"ok"
        assert f"https://127.0.0.1:{port}/?room=" in log_path.read_text()  # the links name the bound address
    finally:
        stop_process(proc)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in (links.ROOM_ENV, links.URL_ENV, links.SLOTS_ENV)}


def test_the_makefile_has_a_room_target_and_run_stays_on_loopback():
    text = (Path(ROOT) / "Makefile").read_text()
    assert re.search(r"^room: setup( \$\(if \$\(RAY\),ray\))?$", text, re.MULTILINE)  # Ray only with RAY=
    assert "-m rlhf_engine room --port $(PORT)" in text
    assert "--server.address $(HOST)" in text  # make run: loopback unless HOST is given

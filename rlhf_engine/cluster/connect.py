"""Reaching a Ray cluster: ``connect("auto")`` starts a local one on this machine, bound to the loopback;
``connect("HOST:PORT")`` joins a running one (the address ``ray start --head`` printed).

An address that does not answer is one line (``ClusterError``) after a TCP check of at most ``TCP_TIMEOUT_S``
seconds, not Ray's minutes of retries; so is a cluster that refuses this connection's token. Ray's token
authentication is on by default: a remote cluster's token goes in ``RAY_AUTH_TOKEN`` or in the file that
``RAY_AUTH_TOKEN_PATH`` names (default ``~/.ray/auth_token``); a token given turns token mode on for this driver.

The run folders are the one contract between the driver and the tasks, so the workspace must lie on a filesystem
every node mounts at the same path: ``check_shared_folder`` asks one task on each node to read a file written here.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

LOCAL = "auto"  # the address that starts a local cluster on this machine
REQUIREMENTS = "requirements-ray.txt"  # Ray, pinned, in the project's root: `make test` installs it, `make run` not
TCP_TIMEOUT_S = 5.0  # how long an address may take to answer before the cluster is called unreachable
CHECK_TIMEOUT_S = 120.0  # how long the shared-folder check waits for one task per node
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray binds every server of a local cluster to 127.0.0.1
TOKEN_ENVS = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class ClusterError(Exception):
    """The cluster cannot be used: one line for the user (the command exits 2)."""


@dataclass
class Node:
    """One alive node of the cluster, as Ray reports it."""

    node_id: str  # Ray's id (hex)
    address: str  # its IP address
    cpus: float  # Ray's CPU resource
    gpus: float  # Ray's GPU resource
    memory_bytes: int  # Ray's memory resource (what tasks may ask for)


@dataclass
class Cluster:
    """A connected cluster: where it is and its alive nodes."""

    address: str  # as given: "auto" or HOST:PORT
    gcs_address: str  # the address other drivers join it by
    nodes: list[Node] = field(default_factory=list)
    gpu_memory_bytes: int | None = None  # one GPU's memory (a node's first), when the cluster has GPUs

    @property
    def local(self) -> bool:
        return self.address == LOCAL

    @property
    def gpus(self) -> float:
        return sum(node.gpus for node in self.nodes)

    def describe(self) -> str:
        cpus = sum(node.cpus for node in self.nodes)
        gib = sum(node.memory_bytes for node in self.nodes) / 2 ** 30
        where = "a local Ray on this machine" if self.local else f"the Ray cluster at {self.address}"
        gpus = f", {self.gpus:g} GPUs" if self.gpus else ""
        return f"{where}: {len(self.nodes)} node{'s' * (len(self.nodes) != 1)}, {cpus:g} CPUs{gpus}, {gib:.1f} GiB"


_connected: "Cluster | None" = None  # this process's cluster: Ray joins one per process


def require_ray():
    """The ray module; ClusterError when it is not installed (``make run`` does not install it)."""
    try:
        import ray
    except ImportError:
        raise ClusterError(f"Ray is not installed in this environment: install it with "
                           f"'{sys.executable} -m pip install -r {REQUIREMENTS}' (make test does)") from None
    return ray


def connect(address: str, cpus: int | None = None) -> Cluster:
    """Connect this process to the cluster (once; later calls return the same cluster). ``cpus``: the CPUs a local
    cluster offers (default: this process's)."""
    global _connected
    address = (address or "").strip()
    if not address:
        raise ClusterError("--ray needs an address: 'auto' (a local Ray on this machine) or HOST:PORT of a cluster")
    if address != LOCAL:
        _check_reachable(address)
    if _connected is not None:
        if _connected.address != address:
            raise ClusterError(f"this process is already connected to {_connected.address}, not {address}")
        return _connected
    if address == LOCAL:
        _on_loopback()
        ray = require_ray()
        cpus = cpus or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
        init = dict(address="local", num_cpus=int(cpus))
    else:
        if _host_port(address)[0] in LOOPBACK_HOSTS:  # a cluster bound to the loopback: reach it there, not by the
            _on_loopback()  # machine's LAN address
        if os.environ.get("RAY_AUTH_MODE") is None and _token_given():
            os.environ["RAY_AUTH_MODE"] = "token"  # Ray sends a token only in token mode
        ray = require_ray()
        init = dict(address=address)
    init.update(include_dashboard=False, log_to_driver=False, configure_logging=False,
                runtime_env={"env_vars": {"PYTHONPATH": _python_path()}})
    with _stderr_kept() as said:
        try:
            context = ray.init(**init) if address != LOCAL else _started_to_last(ray, init)
        except Exception as err:  # noqa: BLE001 - every failure to join is the user's one line
            raise ClusterError(_why_not(address, err, said())) from None
    _connected = Cluster(address, context.address_info.get("gcs_address", ""), alive_nodes(ray))
    if _connected.gpus:
        _connected.gpu_memory_bytes = _gpu_memory(ray)
    return _connected


def _on_loopback() -> None:
    """Ray's loopback mode: 127.0.0.1 is this node's address, and a local cluster's servers listen there only. Ray
    reads it when imported: set in the environment (its servers and workers) and, if Ray is imported already, in
    the constant it was read into."""
    os.environ[LOOPBACK_ENV] = "0"
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = False


def _started_to_last(ray, init: dict):
    """``ray.init`` of a local cluster, from a thread that lives as long as this process. Ray starts its servers
    with PR_SET_PDEATHSIG, which kills them when the *thread* that started them ends: started from a page's script
    thread (the room's server), the cluster would die with the page's run."""
    if threading.current_thread() is threading.main_thread():
        return ray.init(**init)
    done: dict = {}
    ready = threading.Event()

    def keeper() -> None:
        try:
            done["context"] = ray.init(**init)
        except BaseException as err:  # noqa: BLE001 - raised again in the caller's thread
            done["error"] = err
        ready.set()
        if "context" in done:
            threading.Event().wait()  # the cluster's servers are this thread's children: it never ends

    threading.Thread(target=keeper, name="ray-local-cluster", daemon=True).start()
    ready.wait()
    if "error" in done:
        raise done["error"]
    return done["context"]


def disconnect() -> None:
    """Leave the cluster (a local one stops)."""
    global _connected
    if _connected is not None:
        sys.modules["ray"].shutdown()
        _connected = None


def alive_nodes(ray) -> list[Node]:
    return [Node(n["NodeID"], n["NodeManagerAddress"], float(n["Resources"].get("CPU", 0)),
                 float(n["Resources"].get("GPU", 0)), int(n["Resources"].get("memory", 0)))
            for n in ray.nodes() if n.get("Alive")]


def _check_reachable(address: str) -> None:
    host, port = _host_port(address)
    try:
        with socket.create_connection((host, port), timeout=TCP_TIMEOUT_S):
            pass
    except OSError as err:
        reason = "no answer" if isinstance(err, TimeoutError) else (err.strerror or str(err)).lower()
        raise ClusterError(f"cannot reach the Ray cluster at {address}: {reason} (is 'ray start --head' running "
                           "there, and is its port open to this machine?)") from None


def _host_port(address: str) -> tuple[str, int]:
    bare = address.split("://", 1)[-1]
    host, sep, port = bare.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ClusterError(f"--ray {address!r}: expected 'auto' or HOST:PORT (the address 'ray start --head' printed)")
    return host.strip("[]"), int(port)


def _token_given() -> bool:
    return any(os.environ.get(name) for name in TOKEN_ENVS) or (Path.home() / ".ray" / "auth_token").is_file()


def _why_not(address: str, err: Exception, said: str) -> str:
    """The user's line for a failed ``ray.init``: a refused token named as such."""
    text = f"{err} {said}"
    if "InvalidAuthToken" in text or "Unauthenticated" in text or type(err).__name__ == "AuthenticationError":
        return (f"the Ray cluster at {address} refused this connection's token: put the cluster's token in "
                "RAY_AUTH_TOKEN, or in the file RAY_AUTH_TOKEN_PATH names (default ~/.ray/auth_token)")
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return f"could not join the Ray cluster at {address}: {first}"


@contextlib.contextmanager
def _stderr_kept():
    """Ray's C++ side writes its retries straight to file descriptor 2: kept aside while joining (``said()`` reads
    them), so a refused connection is one line, not a screenful."""
    keep = tempfile.TemporaryFile()
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(keep.fileno(), 2)

    def said() -> str:
        keep.seek(0)
        return keep.read().decode("utf-8", "replace")
    try:
        yield said
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _python_path() -> str:
    """The tasks' PYTHONPATH: this checkout first (the same path on every node, like the workspace)."""
    here = str(Path(__file__).resolve().parents[2])
    return os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)


def _gpu_memory(ray) -> int | None:
    @ray.remote(num_gpus=0.01, num_cpus=0)
    def memory() -> int:
        import torch

        return int(torch.cuda.get_device_properties(0).total_memory)
    try:
        return ray.get(memory.remote(), timeout=CHECK_TIMEOUT_S)
    except Exception:  # noqa: BLE001 - no GPU share can be sized: tasks then ask for whole GPUs
        return None


def check_shared_folder(folder: Path) -> None:
    """ClusterError unless every alive node sees ``folder`` at the same path (a file written here is read there)."""
    ray = require_ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(8)
    probe = folder / f".ray-check-{token}"
    probe.write_text(token)

    @ray.remote(num_cpus=0, max_retries=0)
    def reads(path: str) -> str | None:
        try:
            return Path(path).read_text()
        except OSError:
            return None
    try:
        nodes = alive_nodes(ray)
        refs = [reads.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n.node_id, soft=False))
                .remote(str(probe)) for n in nodes]
        seen = ray.get(refs, timeout=CHECK_TIMEOUT_S)
    finally:
        probe.unlink(missing_ok=True)
    blind = [n.address for n, text in zip(nodes, seen) if text != token]
    if blind:
        raise ClusterError(f"{folder} is not seen by node{'s' * (len(blind) > 1)} {', '.join(sorted(set(blind)))}: "
                           "the workspace must lie on a filesystem every node mounts at the same path")

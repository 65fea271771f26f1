"""The server's long-lived objects, frozen once, so that Streamlit's garbage collection after each script run is cheap.

Streamlit runs a full ``gc.collect(2)`` after every script run, a fragment's timer rerun included
(``runner.postScriptGC``). With torch, transformers, peft and plotly imported, that collection walks about 530 000
objects that live as long as the server: 0.12–0.14 s of a core per run (2-core AMD EPYC with AVX-512, Python
3.11), against 3 ms for the Workshop page's live fragment itself. A room of 20 pages, each rerunning its fragment
every 2 s, spent more than the server's one core on it. ``gc.freeze()`` moves every object alive at that moment
into a permanent generation the collector no longer walks (CPython's documented use: right after start-up); the
collection after a run then walks only what the runs made, and takes well under a millisecond.

Frozen objects are still freed by reference counting; only a reference cycle among them would never be collected.
The freeze happens once per server, after importing the modules the pages use and a full collection: what is frozen
is the imported modules and the first session's few objects, not garbage.
"""

from __future__ import annotations

import gc
import importlib
import threading

# What the pages' scripts end up importing: their objects make up nearly all of the server's heap. The engine's
# models module comes before peft: it silences a bitsandbytes warning that importing peft would otherwise log.
LONG_LIVED_MODULES = ("pandas", "plotly.graph_objects", "torch", "transformers", "rlhf_engine.core.models", "peft",
                      "rlhf_engine.methods", "rlhf_engine.lab.figures")

_lock = threading.Lock()
_frozen = False


def freeze_long_lived_heap() -> bool:
    """Import the long-lived modules, collect, and freeze the heap: once per process. True if this call froze it."""
    global _frozen
    with _lock:
        if _frozen:
            return False
        for name in LONG_LIVED_MODULES:
            importlib.import_module(name)
        gc.collect()
        gc.freeze()
        _frozen = True
        return True

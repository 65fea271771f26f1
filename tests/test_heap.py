"""The server's long-lived heap is frozen once (dashboard.heap): Streamlit's gc after each script run then walks only
what the runs made, not the ~half a million objects of torch, transformers and plotly."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHECK = """
import gc, sys
from dashboard.heap import LONG_LIVED_MODULES, freeze_long_lived_heap
assert freeze_long_lived_heap() is True
frozen, walked = gc.get_freeze_count(), len(gc.get_objects())
assert all(name in sys.modules for name in LONG_LIVED_MODULES)
assert frozen > 100_000, frozen  # the imported modules' objects
assert walked < frozen / 20, (walked, frozen)  # what a full collection still walks
garbage = [[] for _ in range(1000)]
for item in garbage:
    item.append(item)  # a reference cycle made after the freeze is still collected
del garbage, item
assert gc.collect(2) >= 1000
assert freeze_long_lived_heap() is False and gc.get_freeze_count() == frozen  # once per process
"""


def test_the_heap_is_frozen_once_and_new_cycles_are_still_collected():
    done = subprocess.run([sys.executable, "-c", CHECK], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "gemm_4bit" not in done.stderr  # the engine's filter is in place before peft is imported

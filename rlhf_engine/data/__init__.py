"""Preference pairs and prompts: reading and checking pair files in every shape (CSV, JSONL, Parquet, a
datasets folder, a hub dataset), writing them, the SQLite pair store the dashboard collects into, and
collecting pairs by hand.

* ``pairs.py``: the types (``PreferencePair``, ``Prompt``, ``Message``), ``prompt_text``, ``read_pairs``,
  ``read_prompts`` and ``write_pairs``, and the checks that turn a row into a pair;
* ``errors.py``: ``DataError``, the one error a bad file raises;
* ``tables.py``: loading a file or a datasets folder into unvalidated rows;
* ``hub.py``: hub datasets ``ORG/NAME[:split]`` (``hub_dataset`` tells one from a path), from the local cache or
  the hub;
* ``store.py``: the SQLite ``PairStore`` and its ``StoredPair``;
* ``collect.py``: pairs picked by hand.

Nothing here imports torch or ``rlhf_engine.core`` at import time: commands that start without torch read pairs.
"""

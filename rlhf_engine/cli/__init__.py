"""CLI: ``python -m rlhf_engine COMMAND ...``.

The commands: validate-data, make-demo-pairs, pairs and collect (preference data); train-rm; one command per
method of methods/registry.py (built-in, or added through RLHF_WORKBENCH_METHODS), its flags one per field of the
method's config dataclass; sweep; resume and run-job; sample, export, report and runs; room (serve a workshop).

Every user error (bad file, bad flag value, missing run) prints one line on stderr and exits 2.

The modules: parser.py builds the parser, flags.py makes flags of config dataclasses and configs of flags,
train.py the training commands, follow.py prints a job's progress, tools.py the commands around training,
room.py the command that opens a workshop room and serves it.
"""

from __future__ import annotations

import logging
import os
import sys

from rlhf_engine.methods import registry

from . import room, tools, train
from .errors import EXIT_USER_ERROR, UserError
from .flags import set_fields
from .parser import build_parser
from .train import policy_config, ppo_config, reward_config

__all__ = ["EXIT_USER_ERROR", "UserError", "build_parser", "main", "policy_config", "ppo_config",
           "reward_config", "set_fields"]

# The commands that are not a method's (those are train.train_method, one per registry record).
COMMANDS = {
    "validate-data": tools.validate_data,
    "make-demo-pairs": tools.make_demo_pairs,
    "train-rm": train.train_rm,
    "sweep": train.sweep,
    "resume": train.resume,
    "sample": tools.sample,
    "runs": tools.runs,
    "export": tools.export,
    "report": tools.report,
    "run-job": train.run_job,
    "pairs": tools.pairs,
    "collect": tools.collect,
    "room": room.room,
}

# Former private names, still used by tests/test_lab.py.
_reward_config, _ppo_config = reward_config, ppo_config


def data_parallel_commands() -> tuple[str, ...]:
    """What runs under `accelerate launch` (core/distributed.py): every method's command, and resume."""
    return (*registry.names(), "resume")


def main(argv: list[str] | None = None) -> int:
    from rlhf_engine.config import ModelSourceError
    from rlhf_engine.data.errors import DataError

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        parser = build_parser()  # reads the registry: a bad RLHF_WORKBENCH_METHODS is the user's one line too
    except registry.MethodError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    args = parser.parse_args(argv)  # bad flags: argparse prints usage + one line, exits 2
    try:
        _join_data_parallel(args.command)
        return COMMANDS.get(args.command, train.train_method)(args)
    except (UserError, DataError, ModelSourceError, FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _join_data_parallel(command: str) -> None:
    """Under accelerate launch (or torchrun), join the process group; refuse a command that runs in one process.
    WORLD_SIZE is read without importing torch: most commands never need it."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    from rlhf_engine.core import distributed

    allowed = data_parallel_commands()
    if command not in allowed:
        raise UserError(f"'{command}' runs in one process; only {', '.join(allowed)} run data-parallel under "
                        "accelerate launch")
    distributed.init_from_environment()

"""Flags from the config dataclasses: one ``--field-name`` per field, typed from its annotation, its help the
field's comment in config.py (the dashboard's forms read the same comments). A knob added to a config, or a
method added to methods/registry.py, is a flag of its command at once, and a flag's value reaches the config
field of the same name with no table in between.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing

from rlhf_engine.config import FIELD_CHOICES, field_defaults, field_help

from .errors import UserError

# config.FIELD_CHOICES as argparse choices: --help lists them and argparse refuses another word. A method's field
# that shares a name but not the words (its default is not among them) gets no choices here; its config still
# checks it.
# Counts that must be at least 1 and numbers with a bound: refused by argparse, naming the flag, before any
# config is built (the configs check most of them again).
POSITIVE_INTS = frozenset({
    "steps", "batch_size", "response_length", "checkpoint_every", "probe_prompts", "reference_probe_samples",
    "num_mini_batches", "ppo_epochs", "group_size", "answers_per_pass", "epochs", "max_length", "pairs_per_pass",
    "lora_r",
})
NON_NEGATIVE_FLOATS = frozenset({"kl_coef", "kl_target"})
POSITIVE_FLOATS = frozenset({"temperature"})
ALIASES = {"learning_rate": ("--lr",)}  # the short names the hand-typed flags had
OWN_DEFAULTS = {"seed": 0}  # every other field's flag defaults to None: left out, the config's default applies
METAVARS = {"report_to": "TRACKERS"}


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def float_above(bound: float, inclusive: bool):
    """An argparse type: a number > bound (or >= bound when ``inclusive``)."""
    sign = ">=" if inclusive else ">"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (value >= bound if inclusive else value > bound):
            raise argparse.ArgumentTypeError(f"expected a number {sign} {bound:g}, got {text!r}")
        return value

    return parse


positive_float = float_above(0.0, inclusive=False)
non_negative_float = float_above(0.0, inclusive=True)


def field_names(cls: type) -> list[str]:
    """The fields of a config that are flags: all but the nested model settings."""
    return [f.name for f in dataclasses.fields(cls) if f.name != "model"]


def field_kinds(cls: type) -> dict[str, type]:
    """Each field's value type from its annotation; ``X | None`` is X (the flag, left out, gives None)."""
    hints = typing.get_type_hints(cls)
    kinds = {}
    for name in field_names(cls):
        hint = hints[name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        kinds[name] = args[0] if len(args) == 1 else hint
    return kinds


def option(name: str) -> str:
    """A field's flag: ``kl_coef`` -> ``--kl-coef``."""
    return "--" + name.replace("_", "-")


def add_config_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """A flag per field of ``cls`` (``model`` aside: --model and --quant), and --set for any field by name."""
    helps, defaults, kinds = field_help(cls), field_defaults(cls), field_kinds(cls)
    group = parser.add_argument_group(f"{cls.__name__} settings (a flag left out keeps the default shown)")
    for name in field_names(cls):
        default = "unset" if defaults[name] is None else defaults[name]
        text = f"{helps.get(name, name.replace('_', ' '))} (default {default})"
        group.add_argument(option(name), *ALIASES.get(name, ()), dest=name, default=OWN_DEFAULTS.get(name),
                           help=text.replace("%", "%%"), **_value_kind(name, kinds[name], defaults[name]))
    first = field_names(cls)[0]
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help=f"any {cls.__name__} field by name, e.g. --set {first}={defaults[first]} "
                             "(repeatable; wins over the field's flag)")


def _value_kind(name: str, kind: type, default) -> dict:
    """What argparse needs to read a field's value: a type, choices, or an on/off pair of flags."""
    if kind is bool:
        return {"action": argparse.BooleanOptionalAction}
    if kind is int:
        return {"type": positive_int if name in POSITIVE_INTS else int, "metavar": "N"}
    if kind is float:
        bounded = {**dict.fromkeys(NON_NEGATIVE_FLOATS, non_negative_float),
                   **dict.fromkeys(POSITIVE_FLOATS, positive_float)}
        return {"type": bounded.get(name, float), "metavar": "X"}
    choices = FIELD_CHOICES.get(name, ())
    if default in choices:
        return {"choices": choices}
    return {"metavar": METAVARS.get(name, "TEXT")}


def flag_fields(args: argparse.Namespace, cls: type) -> dict:
    """The fields of ``cls`` the command's flags set (a flag left out, None, leaves its field at the default)."""
    return {name: getattr(args, name) for name in field_names(cls) if getattr(args, name, None) is not None}


def set_fields(cls: type, assignments: list[str]) -> dict:
    """--set FIELD=VALUE pairs, each value parsed as its field is typed."""
    kinds = field_kinds(cls)
    fields = {}
    for item in assignments:
        name, sep, text = item.partition("=")
        if not sep or name not in kinds:
            raise UserError(f"--set {item!r}: expected FIELD=VALUE with FIELD one of {', '.join(sorted(kinds))}")
        try:
            fields[name] = _parse_value(kinds[name], text)
        except ValueError:
            raise UserError(f"--set {item!r}: {text!r} is not a valid {kinds[name].__name__}") from None
    return fields


def _parse_value(kind: type, text: str):
    if kind is bool:
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(text)
        return text.lower() in ("true", "1")
    if kind is int:
        return int(text)
    if kind is float:
        return None if text.lower() == "none" else float(text)
    return text

"""The commands around training: preference data (validate-data, make-demo-pairs, pairs, collect), and using
or showing runs (sample, export, report, runs).

validate-data, runs, pairs and report import no torch (they start in about a second): what they need is
imported inside each command, and only the commands that load a model import the model code.
"""

from __future__ import annotations

import sys

from .errors import EXIT_USER_ERROR, UserError
from .follow import followed_metrics

PAIR_FILE_TYPES = (".jsonl", ".csv", ".parquet")


def validate_data(args) -> int:
    from rlhf_engine.data.pairs import read_pairs

    pairs = read_pairs(args.file)
    print(f"{len(pairs)} pairs")
    return 0


def make_demo_pairs(args) -> int:
    from rlhf_engine.config import ModelConfig
    from rlhf_engine.data.pairs import write_pairs
    from rlhf_engine.lab import demo

    if args.out.suffix.lower() not in PAIR_FILE_TYPES:
        raise UserError(f"--out must end in .jsonl, .csv or .parquet, got {args.out.name!r}")
    config = ModelConfig(source=args.model, quant=args.quant)
    if args.completions < 2:
        raise UserError(f"--completions must be at least 2 (a pair needs two), got {args.completions}")
    pairs = demo.make_demo_pairs(args.n, config, seed=args.seed, temperature=args.temperature,
                                 completions_per_prompt=args.completions, response_length=args.response_length,
                                 on_progress=lambda done, total: print(f"\r{done}/{total} pairs", end="",
                                                                       file=sys.stderr, flush=True))
    print(file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_pairs(pairs, args.out)
    print(f"wrote {len(pairs)} pairs to {args.out}")
    return 0


def sample(args) -> int:
    from rlhf_engine.config import ModelConfig
    from rlhf_engine.core.generation import decode_responses, sample_responses
    from rlhf_engine.core.models import load_model_and_tokenizer, set_seed

    model, tokenizer = load_model_and_tokenizer(ModelConfig(source=args.model, quant=args.quant))
    if args.adapter is not None:
        from peft import PeftModel

        from rlhf_engine.core.lora_fused import fuse_lora_products

        adapter = (args.adapter / "policy" if (args.adapter / "policy" / "adapter_config.json").is_file()
                   else args.adapter)
        if not (adapter / "adapter_config.json").is_file():
            raise UserError(f"{args.adapter}: no PEFT adapter (adapter_config.json) found")
        model = PeftModel.from_pretrained(model, str(adapter))
        fuse_lora_products(model)
    set_seed(args.seed)
    rollout = sample_responses(model, tokenizer, [args.prompt], args.max_new_tokens, args.temperature)
    print(decode_responses(tokenizer, rollout)[0])
    return 0


def export(args) -> int:
    from rlhf_engine.runs.export import export_run

    out = export_run(args.path, args.out, adapter_only=args.adapter)
    print(f"wrote {out} ({'the PEFT adapter' if args.adapter else 'a merged model'}; see its README.md)")
    return 0


def report(args) -> int:
    from rlhf_engine.lab.report import write_report

    if args.out is not None and args.out.suffix.lower() not in (".html", ".htm"):
        raise UserError(f"--out must end in .html, got {args.out.name!r}")
    print(f"wrote {write_report(args.path, args.out)}")
    return 0


def runs(args) -> int:
    """One line per run: its state, step and the last values of the metrics its kind follows."""
    from rlhf_engine.runs.runfolder import list_runs

    found = list_runs(args.root)
    if not found:
        print(f"no runs in {args.root}")
        return 0
    for run in found:
        status = run.status()
        metrics = run.metrics()
        last = metrics[-1] if metrics else {}
        kind = run.config().get("kind", "?")
        keys = [k for k in followed_metrics(kind) if not k.startswith("time/")]
        shown = "  ".join(f"{k}={last[k]:.4g}" for k in keys if isinstance(last.get(k), (int, float)))
        line = (f"{run.id:24s} {kind:12s} {status['state']:11s} "
                f"step {status.get('step', 0)}/{status.get('total_steps', '?')}  {shown}")
        if status["state"] == "failed":
            line += f"  error: {status.get('error')}"
        print(line)
    return 0


def pairs(args) -> int:
    from rlhf_engine.data.pairs import prompt_text, read_pairs
    from rlhf_engine.data.store import PairStore

    if args.action == "add":
        found = read_pairs(args.file)  # the whole file is checked before anything is stored
        PairStore(args.store).add_many(found, source=f"upload:{args.file.name}")
        print(f"stored {len(found)} pairs from {args.file} in {args.store}")
        return 0
    if not args.store.is_file():
        raise UserError(f"{args.store}: no pair store yet (add pairs first)")
    store = PairStore(args.store)
    if args.action == "count":
        print(store.count())
    elif args.action == "list":
        for row in store.list(limit=args.limit, search=args.search):
            print(f"#{row.id} [{row.source}] {prompt_text(row.pair.prompt)!r}\n"
                  f"  chosen:   {row.pair.chosen!r}\n  rejected: {row.pair.rejected!r}")
    elif args.action == "delete":
        missing = [i for i in args.ids if not store.delete(i)]
        print(f"deleted {len(args.ids) - len(missing)} pairs" + (f"; no pair with id {missing}" if missing else ""))
        return EXIT_USER_ERROR if missing else 0
    elif args.action == "export":
        if args.out.suffix.lower() not in PAIR_FILE_TYPES:
            raise UserError(f"export file must end in .jsonl, .csv or .parquet, got {args.out.name!r}")
        print(f"wrote {store.export(args.out)} pairs to {args.out}")
    return 0


def collect(args) -> int:
    """Two answers per prompt; type a or b to store the pair at once, t (tie) or s (skip) to store nothing."""
    import random

    from rlhf_engine.config import ModelConfig
    from rlhf_engine.core.models import load_model_and_tokenizer, set_seed
    from rlhf_engine.data.store import PairStore
    from rlhf_engine.lab.demo import demo_prompt_split

    config = ModelConfig(source=args.model, quant=args.quant)
    model, tokenizer = load_model_and_tokenizer(config)
    store = PairStore(args.store)
    set_seed(args.seed)
    prompts = args.prompt or random.Random(args.seed).sample(demo_prompt_split()[0], len(demo_prompt_split()[0]))
    stored = 0
    for prompt in prompts:
        answer = _ask(model, tokenizer, prompt, args, config.chat_template)
        if answer is None:
            break
        if (pair_id := _store_pick(store, *answer)) is not None:
            stored += 1
            print(f"stored pair #{pair_id}")
    print(f"stored {stored} pairs in {args.store}")
    return 0


PICKS = {"a": "a", "b": "b", "t": "tie", "s": "skip"}


def _ask(model, tokenizer, prompt: str, args, chat_template: bool):
    """Show two answers to ``prompt`` and read the pick: (prompt, a, b, pick), or None to quit (q, or input
    closed)."""
    from rlhf_engine.data import collect as collecting

    a, b = collecting.two_answers(model, tokenizer, prompt, args.max_new_tokens, args.temperature, chat_template)
    print(f"\nprompt: {prompt}\n\n[A] {a}\n\n[B] {b}\n")
    answer = ""
    while answer not in (*PICKS, "q"):
        try:
            answer = input("better? a / b / t(ie) / s(kip) / q(uit): ").strip().lower()
        except EOFError:  # input closed: stop as if q
            answer = "q"
    return None if answer == "q" else (prompt, a, b, PICKS[answer])


def _store_pick(store, prompt: str, a: str, b: str, pick: str) -> int | None:
    """Store the picked pair; its id, or None when the pick stores nothing (a tie, a skip, two equal answers)."""
    from rlhf_engine.data import collect as collecting

    try:
        pair = collecting.picked_pair(prompt, a, b, pick)
    except ValueError as err:
        print(err)
        return None
    return None if pair is None else store.add(pair, source=collecting.SOURCE)

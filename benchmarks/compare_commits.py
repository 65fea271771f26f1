"""Two commits' training steps side by side: the old commit's speed and memory beside this work tree's.

Run by hand (not in CI), with nothing else running (these settings: about half an hour on the 2-core machine
of RESULTS.md, PPO's three pairs half of it):

    .venv/bin/python benchmarks/compare_commits.py --old 28c270d --methods ppo,grpo,rloo,dpo --pairs 3 --iterations 5

The old commit is checked out with ``git worktree add --detach`` into a temporary folder, removed at the end,
or into ``--worktree DIR``, which is kept and reused by the next run while it is still at that commit. The
new side is this work tree as it is, uncommitted changes included (or ``--new REF``, checked out likewise).
Each side runs its own commit's ``benchmarks/ppo_speed.py`` (PPO) or ``benchmarks/method_speed.py --method M``
(GRPO, RLOO, DPO) with this checkout's Python; each script puts its own checkout first on ``sys.path``, so
each side imports its own ``rlhf_engine``. Both sides get the same flags, ``compare_trl.py``'s settings (flags
that both commits' scripts accept): 8 answers a step (GRPO and RLOO: 2 prompts × 4; DPO: 8 pairs), 32 new
tokens, LoRA rank 8 (alpha 16), the engine's default dtype (fp32 on CPU), PPO 4 epochs; GRPO and RLOO answer
the demo prompts, DPO trains on ``compare_trl.py``'s pairs; ``--iterations`` steps are measured after
``--warmup``.

For each method, ``--pairs`` run pairs: the two processes run side by side and take turns one step at a
time (``compare_trl.run_taking_turns``, ``benchmarks/turns.py``), so the machine's drifting speed falls on
both alike. The side that starts (loads and warms up alone, then takes the first timed turn) alternates:
the old side in pairs 1, 3, ..., the new side in pairs 2, 4, .... Per pair: each side's median step and peak
RSS (``ru_maxrss``), and new / old of each. Per method: the median over the pairs of those ratios, held
against ``--max-slowdown`` and ``--max-rss-rise`` (5 % each). Prints a Markdown table and writes it all to
``--out`` (benchmarks/results/compare_commits.json); each run's own JSON and log go to ``--logs`` (a new
temporary folder unless named). Exit status 1 when a method is over a limit.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import ROOT, machine, threads_flag, timing_flags, write_json
from compare_trl import run_taking_turns, write_inputs

METHODS = ("ppo", "grpo", "rloo", "dpo")
SIDES = ("old", "new")
COMMON = ["--batch-size", "8", "--lora-r", "8", "--lora-alpha", "16"]  # compare_trl.py's
PPO = ["--response-length", "32", "--epochs", "4"]
N_PAIRS = 8 * (10 + 2) * 2  # the pairs file of compare_trl.py at its default --rm-steps 10
GIB = 1024 ** 3


def git(*args: str, cwd: Path = ROOT) -> str:
    # --no-optional-locks: a status here never takes the index lock of the work tree others commit from
    return subprocess.run(["git", "--no-optional-locks", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


def commit_of(ref: str) -> str:
    """The full hash of ``ref``'s commit ('' when there is none)."""
    try:
        return git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except subprocess.CalledProcessError:
        return ""


def checkout(commit: str, folder: Path | None) -> tuple[Path, bool]:
    """A clean checkout of ``commit``: ``folder`` where it is one already, else a new worktree there (kept) or
    in a temporary folder (removed by :func:`remove`, which the second value says to call)."""
    if folder is not None and folder.exists():
        head = git("rev-parse", "HEAD", cwd=folder)
        if head != commit:
            raise SystemExit(f"{folder} is at {head[:10]}, not {commit[:10]}: name another --worktree")
        if git("status", "--porcelain", "--untracked-files=no", cwd=folder):
            raise SystemExit(f"{folder} has changes: it would not time {commit[:10]}")
        return folder, False
    temporary = folder is None
    folder = Path(tempfile.mkdtemp(prefix="compare-commits-")) / "tree" if temporary else folder
    git("worktree", "add", "--detach", str(folder), commit)
    return folder, temporary


def remove(folder: Path) -> None:
    git("worktree", "remove", "--force", str(folder))
    shutil.rmtree(folder.parent, ignore_errors=True)


def side_command(tree: Path, method: str, prompts: Path, pairs: Path, iterations: int, warmup: int,
                 threads: int) -> list[str]:
    """The benchmark command of one side (``--out`` is added per run): ``tree``'s own script, our Python."""
    if method == "ppo":
        script, own = "ppo_speed.py", PPO
    else:
        script = "method_speed.py"
        own = ["--method", method, *(["--pairs", str(pairs)] if method == "dpo" else ["--prompts", str(prompts)])]
    return [sys.executable, str(tree / "benchmarks" / script), *COMMON, "--iterations", str(iterations),
            "--warmup", str(warmup), *own, *(["--threads", str(threads)] if threads else [])]


def run_method(method: str, pairs: int, commands: dict[str, list[str]], folder: Path) -> list[dict]:
    """``pairs`` run pairs of the two sides taking turns, the old side first in even pairs (0, 2, ...) and the
    new side in odd ones; per pair, each side's figures and new / old."""
    rows = []
    for k in range(pairs):
        order = SIDES if k % 2 == 0 else SIDES[::-1]
        runs = []
        for side in order:
            out = folder / f"{method}-{k + 1}-{side}.json"
            runs.append(([*commands[side], "--out", str(out)], out, folder / f"{method}-{k + 1}-{side}.log"))
        started = time.monotonic()
        results = dict(zip(order, run_taking_turns(*runs)))
        row = {"first": order[0], "wall_s": round(time.monotonic() - started, 1)}
        for side in SIDES:
            row[side] = {key: results[side][key] for key in ("median_s", "measured_s", "peak_rss_bytes", "load_s")}
        row["step_ratio"] = row["new"]["median_s"] / row["old"]["median_s"]
        row["peak_rss_ratio"] = row["new"]["peak_rss_bytes"] / row["old"]["peak_rss_bytes"]
        rows.append(row)
        print(f"{method} pair {k + 1}/{pairs} ({order[0]} first, {row['wall_s']:.0f} s): "
              f"old {row['old']['median_s']:.2f} s, new {row['new']['median_s']:.2f} s a step "
              f"(new / old {row['step_ratio']:.3f}); peak RSS old {row['old']['peak_rss_bytes'] / GIB:.2f}, "
              f"new {row['new']['peak_rss_bytes'] / GIB:.2f} GiB ({row['peak_rss_ratio']:.3f})", flush=True)
    return rows


def summarise(rows: list[dict], max_slowdown: float, max_rss_rise: float) -> dict:
    """One method's run pairs: the medians of each side and of the pair ratios, and whether they are in limits."""
    step = statistics.median(r["step_ratio"] for r in rows)
    rss = statistics.median(r["peak_rss_ratio"] for r in rows)
    return {"pairs": rows,
            **{f"{side}_median_s": statistics.median(r[side]["median_s"] for r in rows) for side in SIDES},
            **{f"{side}_peak_rss_bytes": statistics.median(r[side]["peak_rss_bytes"] for r in rows)
               for side in SIDES},
            "step_ratio": step, "peak_rss_ratio": rss,
            "within_limits": step <= 1 + max_slowdown and rss <= 1 + max_rss_rise}


def print_table(results: dict) -> None:
    limits = results["settings"]
    print(f"\n| {results['old']['commit'][:7]} → {results['new']['label']}, one step, taking turns "
          f"({limits['pairs']} run pairs) | old, s / step | new, s / step | new / old (per pair) | "
          f"peak RSS old → new | new / old (per pair) | within +{limits['max_slowdown']:.0%} / "
          f"+{limits['max_rss_rise']:.0%} |\n|---|---|---|---|---|---|---|")
    for method, m in results["methods"].items():
        per_pair = ", ".join(f"{r['step_ratio']:.3f}" for r in m["pairs"])
        rss_pairs = ", ".join(f"{r['peak_rss_ratio']:.3f}" for r in m["pairs"])
        print(f"| {method.upper()} | {m['old_median_s']:.2f} | {m['new_median_s']:.2f} | "
              f"**{m['step_ratio']:.3f}** ({per_pair}) | {m['old_peak_rss_bytes'] / GIB:.2f} → "
              f"{m['new_peak_rss_bytes'] / GIB:.2f} GiB | **{m['peak_rss_ratio']:.3f}** ({rss_pairs}) | "
              f"{'yes' if m['within_limits'] else 'NO'} |")
    mach = results["machine"]
    print(f"\n{mach['cpu_model']}, {mach['usable_cores']} cores, AVX-512 {'yes' if mach['avx512'] else 'no'}, "
          f"torch {mach['torch']} ({mach['torch_threads']} threads); {results['wall_s'] / 60:.1f} minutes")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", default="28c270d", help="the commit to compare against (default 28c270d)")
    parser.add_argument("--new", help="a commit for the new side (default: this work tree as it is)")
    parser.add_argument("--worktree", type=Path, help="the old commit's checkout: reused when it is one, else "
                        "made there and kept (default: a temporary worktree, removed at the end)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated, of ppo,grpo,rloo,dpo")
    parser.add_argument("--pairs", type=int, default=3, help="run pairs per method")
    timing_flags(parser, unit="steps per run")
    threads_flag(parser)
    parser.add_argument("--max-slowdown", type=float, default=0.05, help="new / old median step at most 1 + this")
    parser.add_argument("--max-rss-rise", type=float, default=0.05, help="new / old peak RSS at most 1 + this")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "compare_commits.json")
    parser.add_argument("--logs", type=Path, help="folder for each run's JSON and log (default: a new temporary one)")
    parser.add_argument("--args", default="", help="extra flags for both sides' scripts, e.g. "
                        "'--set value_model=separate'")
    parser.add_argument("--new-args", default="", help="extra flags for the new side's script, e.g. "
                        "'--no-reuse-rollout-pass' with --old HEAD: one optimisation off against on, same code")
    args = parser.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    if not methods or set(methods) - set(METHODS):
        parser.error(f"--methods: of {','.join(METHODS)}")
    old = commit_of(args.old)
    if not old:
        parser.error(f"--old: no commit {args.old!r}")
    new = commit_of(args.new) if args.new else None
    if args.new and not new:
        parser.error(f"--new: no commit {args.new!r}")
    logs = args.logs or Path(tempfile.mkdtemp(prefix="compare-commits-logs-"))
    logs.mkdir(parents=True, exist_ok=True)
    print(f"runs' JSONs and logs: {logs}", flush=True)
    prompts, pairs = write_inputs(logs, N_PAIRS)
    started = time.monotonic()
    made = []
    try:
        old_tree, temporary = checkout(old, args.worktree)
        made += [old_tree] if temporary else []
        if new:
            new_tree, temporary = checkout(new, None)
            made += [new_tree]
        else:
            new_tree = ROOT
        results: dict = {
            "old": {"ref": args.old, "commit": old, "subject": git("log", "-1", "--format=%s", old)[:200],
                    "tree": str(old_tree)},
            "new": ({"ref": args.new, "commit": new, "label": new[:7], "tree": str(new_tree)} if new else
                    {"ref": None, "commit": git("rev-parse", "HEAD"), "tree": str(ROOT), "label": "work tree",
                     "uncommitted_changes": bool(git("status", "--porcelain", "--untracked-files=no"))}),
            "machine": machine(),
            "settings": {"args": args.args, "new_args": args.new_args,
                         "methods": methods, "pairs": args.pairs, "iterations": args.iterations,
                         "warmup": args.warmup, "threads": args.threads, "max_slowdown": args.max_slowdown,
                         "max_rss_rise": args.max_rss_rise, "logs": str(logs)},
            "methods": {}}
        for method in methods:
            commands = {side: side_command(tree, method, prompts, pairs, args.iterations, args.warmup, args.threads)
                        for side, tree in (("old", old_tree), ("new", new_tree))}
            commands["old"] += shlex.split(args.args)
            commands["new"] += shlex.split(args.args) + shlex.split(args.new_args)
            results["settings"].setdefault("commands", {})[method] = commands
            rows = run_method(method, args.pairs, commands, logs)
            results["methods"][method] = summarise(rows, args.max_slowdown, args.max_rss_rise)
    finally:
        for tree in made:
            remove(tree)
    results["within_limits"] = all(m["within_limits"] for m in results["methods"].values())
    results["wall_s"] = round(time.monotonic() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, results)
    print_table(results)
    print(f"\nwritten: {args.out}")
    return 0 if results["within_limits"] else 1


if __name__ == "__main__":
    sys.exit(main())

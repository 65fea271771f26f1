"""The README and docs/*.md: every relative link resolves (its #anchor to a heading of the file it names),
every command in a shell code block that runs the CLI parses, and every `make X` there names a Makefile target.

Fast: it reads Markdown and builds the CLI's argument parser; no model is loaded.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import unicodedata
from pathlib import Path

import pytest

from rlhf_engine.cli import build_parser


def _repo_root() -> Path:
    for folder in Path(__file__).resolve().parents:
        if (folder / "Makefile").is_file() and (folder / "README.md").is_file():
            return folder
    raise RuntimeError("no folder above tests/ holds both Makefile and README.md")


ROOT = _repo_root()
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_BLOCKS = {"", "bash", "sh", "shell"}  # the info strings of a fenced block whose lines are commands
# A word that ends the command: what follows belongs to the shell (a pipe, a redirect, the next command).
SHELL_OPERATORS = {"|", "||", "&&", ";", "&", ">", ">>", "<", "2>", "2>&1", "&>"}

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
LINK = re.compile(r"!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")


# -- reading Markdown ----------------------------------------------------------------------------------------

def split_fences(text: str) -> tuple[list[str], list[tuple[str, list[tuple[int, str]]]]]:
    """The file's prose lines (code blocks blanked, so line numbers stay) and its fenced blocks as
    (info string, [(line number, line), ...])."""
    prose: list[str] = []
    blocks: list[tuple[str, list[tuple[int, str]]]] = []
    fence = None
    for number, line in enumerate(text.splitlines(), start=1):
        match = FENCE.match(line)
        if fence is None and match:
            fence = match.group(1)
            blocks.append((match.group(2).lower(), []))
            prose.append("")
        elif fence is not None and line.strip().startswith(fence[0] * len(fence)) and not line.strip(fence[0]).strip():
            fence = None
            prose.append("")
        elif fence is not None:
            blocks[-1][1].append((number, line))
            prose.append("")
        else:
            prose.append(line)
    return prose, blocks


def github_slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it: the rendered text lowercased, punctuation dropped except '-' and
    '_', each space a '-'."""
    text = LINK.sub(lambda m: m.group(1), heading)  # a link in a heading renders as its text
    text = INLINE_CODE.sub(lambda m: m.group(2), text).lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LNM")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in a Markdown file (a repeated heading gets -1, -2, ... as on GitHub)."""
    prose, _ = split_fences(path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    result = set()
    for line in prose:
        match = HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every link and image outside code."""
    prose, _ = split_fences(path.read_text(encoding="utf-8"))
    found = []
    for number, line in enumerate(prose, start=1):
        for match in LINK.finditer(INLINE_CODE.sub(lambda m: " " * len(m.group(0)), line)):
            found.append((number, match.group(2)))
    return found


def broken_links(path: Path) -> list[str]:
    """What is wrong with the file's relative links, one line each."""
    problems = []
    for number, target in links(path):
        if re.match(r"^(https?:|mailto:)", target, re.IGNORECASE):
            continue
        where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{number}: {target}"
        name, _, anchor = target.partition("#")
        linked = (path.parent / name).resolve() if name else path
        if name and not (linked.is_relative_to(ROOT) or not path.is_relative_to(ROOT)):
            problems.append(f"{where}: points outside the repository")
        elif not linked.exists():
            problems.append(f"{where}: no such file")
        elif anchor and (linked.suffix.lower() != ".md" or anchor not in anchors(linked)):
            problems.append(f"{where}: no heading #{anchor} in {linked.name}")
    return problems


def commands(path: Path) -> list[tuple[int, str]]:
    """(line number, command line) of every line in a shell code block: backslash continuations joined."""
    _, blocks = split_fences(path.read_text(encoding="utf-8"))
    found = []
    for info, lines in blocks:
        if info not in SHELL_BLOCKS:
            continue
        pending, start = "", 0
        for number, line in lines:
            if not pending:
                start = number
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            found.append((start, pending + line))
            pending = ""
        if pending:
            found.append((start, pending))
    return found


def words_of(line: str) -> list[str]:
    """The command's words, its comment left off, up to the first shell operator."""
    words = shlex.split(line, comments=True)
    for i, word in enumerate(words):
        if word in SHELL_OPERATORS:
            return words[:i]
    return words


def cli_arguments(line: str) -> list[str] | None:
    """The words after `-m rlhf_engine` (python, .venv/bin/python, accelerate launch ...), or None."""
    words = words_of(line)
    for i in range(len(words) - 1):
        if words[i] == "-m" and words[i + 1] == "rlhf_engine":
            return words[i + 2:]
    return None


def make_target(line: str) -> str | None:
    """The target of a `make` command (after any VAR=value words), '' for make's default, None if not make."""
    words = words_of(line)
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        words = words[1:]
    if not words or words[0] != "make":
        return None
    targets = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
    return targets[0] if targets else ""


def parse_error(arguments: list[str]) -> str | None:
    """None when the CLI's parser accepts the arguments, else what it said."""
    if any(re.search(r"[<>]", word) for word in arguments):
        return "a placeholder in angle brackets: write a concrete example path"
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(arguments)
    except SystemExit as exit_:
        if exit_.code == 0 and ({"-h", "--help"} & set(arguments)):
            return None  # --help: a valid command that prints and exits 0
        return stderr.getvalue().strip().splitlines()[-1] if stderr.getvalue().strip() else f"exit {exit_.code}"
    return None


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return {m.group(1) for m in re.finditer(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, re.MULTILINE)}


# -- the documents -------------------------------------------------------------------------------------------

def _ids(paths):
    return [str(p.relative_to(ROOT)) for p in paths]


def test_the_documents_are_there():
    names = {str(p.relative_to(ROOT)) for p in DOC_FILES}
    assert {"README.md", "docs/workshop.md", "docs/cli.md", "docs/engine.md", "docs/performance.md"} <= names


def test_the_readme_stays_a_first_read():
    """The README keeps what a newcomer needs first; later features add their pages to docs/."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines: move the detail into a page of docs/"


@pytest.mark.parametrize("path", DOC_FILES, ids=_ids(DOC_FILES))
def test_every_link_resolves(path):
    assert broken_links(path) == []


@pytest.mark.parametrize("path", DOC_FILES, ids=_ids(DOC_FILES))
def test_every_cli_command_parses(path):
    problems = []
    for number, line in commands(path):
        arguments = cli_arguments(line)
        if arguments is not None and (error := parse_error(arguments)):
            problems.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}\n    {error}")
    assert problems == []


@pytest.mark.parametrize("path", DOC_FILES, ids=_ids(DOC_FILES))
def test_every_make_command_names_a_target(path):
    targets = makefile_targets()
    problems = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}" for number, line in commands(path)
                if (target := make_target(line)) and target not in targets]
    assert problems == []


def test_the_checks_see_the_documents():
    """The checks above pass vacuously if their patterns match nothing: they must find what is there."""
    all_commands = [line for path in DOC_FILES for _, line in commands(path)]
    cli = [line for line in all_commands if cli_arguments(line) is not None]
    make = [line for line in all_commands if make_target(line) is not None]
    relative = [t for path in DOC_FILES for _, t in links(path) if not t.startswith(("http:", "https:"))]
    assert len(cli) >= 20, cli
    assert any(line.lstrip().startswith("accelerate launch") for line in cli)  # a launcher's command is read too
    assert len(make) >= 3, make
    assert len(relative) >= 30, relative
    assert sum("#" in t for t in relative) >= 10  # anchors are checked, not only files
    assert sum(t.endswith(".png") for t in relative) >= 8  # the screenshots


# -- the checks themselves, on made-up documents ---------------------------------------------------------------

def test_slugs_follow_github():
    assert github_slug("Trackers: TensorBoard, Trackio, W&B") == "trackers-tensorboard-trackio-wb"
    assert github_slug("Several processes (data parallel)") == "several-processes-data-parallel"
    assert github_slug("Taking a model home: export") == "taking-a-model-home-export"
    assert github_slug("The `make test` suite — 2 workers") == "the-make-test-suite--2-workers"
    assert github_slug("β and KL_coef") == "β-and-kl_coef"


def test_broken_links_and_anchors_are_caught(tmp_path):
    (tmp_path / "other.md").write_text("# Title\n\n## A section: here\n\n```\n# not a heading\n```\n")
    doc = tmp_path / "doc.md"
    doc.write_text(
        "# Doc\n"
        "[fine](other.md#a-section-here) [top](#doc) [web](https://example.com/x#y) ![img](other.md)\n"
        "[gone](missing.md) [bad anchor](other.md#nowhere) [code heading](other.md#not-a-heading) [self](#nope)\n"
        "`[in code](missing.md)`\n"
        "```\n[in a block](missing.md)\n```\n"
    )
    problems = broken_links(doc)
    assert len(problems) == 4, problems
    assert [p.split(": ")[1] for p in problems] == [
        "missing.md", "other.md#nowhere", "other.md#not-a-heading", "#nope"]


def test_commands_are_found_joined_and_parsed(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(
        "```bash\n"
        "python -m rlhf_engine ppo --reward runs/rm --out runs/ppo \\\n"
        "    --kl-coef 0.05   # a comment\n"
        "RLHF_WORKSPACE=x .venv/bin/python -m rlhf_engine runs\n"
        "accelerate launch --num_processes 2 -m rlhf_engine resume runs/ppo\n"
        "python -m rlhf_engine ppo --reward runs/rm --out runs/ppo --no-such-flag 1\n"
        "python -m rlhf_engine report <run folder>\n"
        "python -m rlhf_engine ppo --help\n"
        "make run HOST=0.0.0.0\n"
        "PYTEST_WORKERS=4 make no-such-target\n"
        "```\n"
        "```python\n"
        "python -m rlhf_engine not-parsed-here\n"
        "```\n"
    )
    found = commands(doc)
    assert [n for n, _ in found] == [2, 4, 5, 6, 7, 8, 9, 10]
    arguments = [cli_arguments(line) for _, line in found]
    assert arguments[0] == ["ppo", "--reward", "runs/rm", "--out", "runs/ppo", "--kl-coef", "0.05"]
    assert arguments[1] == ["runs"] and arguments[2] == ["resume", "runs/ppo"]
    assert [parse_error(a) is None for a in arguments[:6]] == [True, True, True, False, False, True]
    assert "unrecognized arguments" in parse_error(arguments[3])
    assert [make_target(line) for _, line in found[6:]] == ["run", "no-such-target"]
    assert "run" in makefile_targets() and "test" in makefile_targets()

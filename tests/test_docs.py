"""The documents cannot drift from the code: docs/cli.md is the generated CLI reference, every
`poolbench ...` command the README and docs/ show parses against the real command line, every
Python block of docs/ runs (the README's run in test_readme.py), and no document of the
repository cites a path outside it."""
from __future__ import annotations

import re
import shlex
import subprocess
import warnings
from pathlib import Path

import click
import pytest

from poolbench import cli

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted((REPO / "docs").glob("*.md"))
DOCUMENTS = [REPO / "README.md", *DOCS,
             *(REPO / d / "README.md" for d in ("registry", "suites", "reports", "tests"))]


def test_cli_reference_is_current():
    assert (REPO / "docs" / "cli.md").read_text() == cli.cli_reference(), \
        "docs/cli.md is stale: run `poolbench docs --out docs/cli.md`"


def documented_commands() -> list[tuple[str, str]]:
    """(document, command line) for every `poolbench ...` in a code block or a code span."""
    found = []
    for doc in DOCUMENTS:
        text = doc.read_text()
        spans = [line for lang, body in re.findall(r"```(\w*)\n(.*?)```", text, flags=re.S)
                 if lang in ("bash", "sh", "console", "") for line in body.splitlines()]
        spans += re.findall(r"(?<!`)`([^`\n]+)`(?!`)", text)
        for span in spans:
            for part in re.split(r"&&|;|\|", span.split("  #")[0]):
                words = part.strip().split()
                while words and "=" in words[0]:  # VAR=value before the command
                    words = words[1:]
                if words and words[0].endswith("poolbench") and len(words) > 1:
                    found.append((doc.name, " ".join(words[1:])))
    return sorted(set(found))


def _resolve(args: list[str]) -> None:
    """Parse ``args`` down to the leaf command, as `poolbench` would, without running it."""
    command: click.Command = cli.cli
    ctx = command.make_context("poolbench", list(args), resilient_parsing=False)
    while isinstance(command, click.Group):
        with warnings.catch_warnings():  # click 8.2 deprecates protected_args, 8.1 needs it
            warnings.simplefilter("ignore", DeprecationWarning)
            rest = [*ctx.protected_args, *ctx.args]
        if not rest:
            return
        name, rest = rest[0], rest[1:]
        sub = command.get_command(ctx, name)
        assert sub is not None, f"no command {name!r}"
        if isinstance(sub, click.Group) and not rest:
            return  # the group itself, named in prose
        ctx = sub.make_context(name, rest, parent=ctx, resilient_parsing=False)
        command = sub


def test_the_documents_show_commands():
    assert len(documented_commands()) >= 20


@pytest.mark.parametrize("doc, line", documented_commands())
def test_every_documented_command_parses(doc, line):
    args = shlex.split(line.replace("...", ""), comments=True)
    if any(a in ("-h", "--help") or a.startswith("[") for a in args) \
            or any(re.fullmatch(r"[A-Z_]+", a) for a in args[:2]):
        pytest.skip("help, or usage syntax with placeholders")
    _resolve(args)


@pytest.mark.parametrize("doc", [d for d in DOCS if "```python" in d.read_text()], ids=lambda d: d.name)
def test_every_python_block_of_the_docs_runs(doc, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for i, block in enumerate(re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)):
        exec(compile(block, f"{doc.name} python block {i + 1}", "exec"), namespace)


def test_no_document_cites_a_path_outside_the_repository():
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True).stdout.split()
    texts = [p for p in tracked if p.endswith((".md", ".py", ".toml", ".c", ".txt", ".cfg"))]
    foreign = re.compile("|".join([r"\.\./" + "shared", "shared" + "/spec", r"\bspec/\w+\.md"]))
    bad = [p for p in texts if foreign.search((REPO / p).read_text())]
    assert bad == []


def test_docs_to_an_unwritable_path_is_one_line(capsys):
    assert cli.main(["docs", "--out", "/proc/poolbench-cli.md"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("poolbench: error: cannot write /proc/poolbench-cli.md (") and "\n" not in err

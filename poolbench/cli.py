"""The `poolbench` command line.

Nothing here declares a run option: ``poolbench run NAME`` is generated for every registered
suite from the fields of ``api.RunOptions``, ``training.runtime.TrainSettings`` and the suite's
``Options`` (their help, choices and ranges), so that a new suite or a new option field appears
here, in ``-h`` and in the CLI reference without an edit to this module.
"""
from __future__ import annotations

import dataclasses
import json
import shlex
import sys
import types
import typing
from pathlib import Path

import click
from tabulate import tabulate

from . import api
from .atomic import atomic_write_text, disk_full, is_disk_full
from .config import env_default
from .errors import PoolbenchError, UsageError, one_line_warnings
from .options import flag_of
from .pool_table import pool_rows
from .process import is_main_process
from .registry import load_plugin
from .report import build_report
from .slurm import SlurmOptions
from .status import cell_status, summary
from .suites import get_suite, list_suites
from .suites.base import TrainedSuite
from .suites.intervals import compact
from .suites.verdicts import narrow_note
from .tools import bench, check
from .training.runtime import TrainSettings
from .version import __version__

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _load_plugins(ctx, param, values):
    for item in values or ():
        load_plugin(item)
    return values


def _plugin_option() -> click.Option:
    """`--plugin PATH_OR_MODULE`, repeatable, accepted on every command."""
    return click.Option(
        ["--plugin", "plugins"], multiple=True, metavar="PATH_OR_MODULE", expose_value=False,
        callback=_load_plugins, is_eager=True,
        help="Load pooling operators from a .py file or importable module (repeatable).",
    )


def plugin_option(fn):
    fn.__click_params__ = [*getattr(fn, "__click_params__", []), _plugin_option()]
    return fn


# --- options from their declarations ----------------------------------------------------------

def _base_type(kind):
    """The type a field holds, with ``None`` and tuples unwrapped (tuple values are comma lists)."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        return _base_type(args[0]) if len(args) == 1 else str
    if origin is tuple:
        return str
    return kind


def _default_text(value) -> str | None:
    if value is None or value == ():
        return None
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def click_options(cls: type, skip: set[str] = frozenset()) -> list[click.Option]:
    """One click option per field of ``cls`` declared for the command line; every default is
    None ("not given"), so that the preset's value or the field's default applies."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.metadata.get("cli", True):
            continue
        flag, meta = flag_of(f), f.metadata
        decls = [flag, *meta.get("aliases", ()), f.name]
        kind = _base_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else None
        shown = _default_text(default)
        help_text = (meta.get("help") or "") + (f" [default: {shown}]" if shown else "")
        if kind is bool:
            decls = [f"{flag}/--no-{flag[2:]}", f.name]
            out.append(click.Option(decls, default=None, help=help_text))
            continue
        choices = meta.get("choices")
        ctype = click.Choice(choices) if choices else {int: click.INT, float: click.FLOAT}.get(kind, click.STRING)
        out.append(click.Option(decls, type=ctype, default=None, metavar=meta.get("metavar"), help=help_text))
    return out


def run_parameters(suite=None) -> list[click.Parameter]:
    """The options of `poolbench run NAME` (of `run all` without a suite)."""
    pool = click.Option(["--pool", "pools"], multiple=True, metavar="SPEC",
                        help="Pool spec, e.g. max or lift:kernel_size=7 (repeatable).")
    as_json = click.Option(["--json", "as_json"], is_flag=True, help="Print result rows as JSON on stdout.")
    wide = click.Option(["--wide"], is_flag=True,
                        help="Print every column and interval (default: the metrics with a difference, "
                             "their Δ and the verdict, fitting 100 columns).")
    params = [pool, *click_options(api.RunOptions), *click_options(TrainSettings),
              *click_options(SlurmOptions)]
    if suite is not None:
        taken = {p.name for p in params}
        params += click_options(suite.Options, skip=taken)
    return [*params, as_json, wide, _plugin_option()]


# --- commands ---------------------------------------------------------------------------------

@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="poolbench")
@plugin_option
def cli():
    """poolbench: fair, reproducible comparisons of pooling layers in ConvNets."""


cli.add_command(bench)
cli.add_command(check)


@cli.command("pools", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list on stdout instead of a table.")
@click.option("--channels", default=64, show_default=True, help="Channels at which parameters are counted.")
@click.argument("pattern", default="*")
@plugin_option
def pools_cmd(as_json, channels, pattern):
    """List registered pooling operators (built-in and plugins) matching PATTERN."""
    rows = pool_rows(pattern, channels)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = [
        {
            "name": r["name"],
            "paper": r["paper"],
            "year": r["year"] or "",
            "licence": r["licence"],
            f"params@{channels}": "" if r["params"] is None else r["params"],
            "buffers": "" if r["buffers"] is None else r["buffers"],
            "stochastic": "yes" if r["stochastic"] else "",
            "invertible": "yes" if r["invertible"] else "",
            "shift-eq": "" if r["shift_consistency"] is None else float(r["shift_consistency"]),
            "source": r["source"],
            "version": r["version"],
            "status": r["status"] + (f": {r['error']}" if r["error"] else ""),
        }
        for r in rows
    ]
    click.echo(tabulate(table, headers="keys", tablefmt="github", floatfmt=".2f"))


def execute_suite(name: str, pools: tuple, as_json: bool, wide: bool, options: dict) -> None:
    """Flags -> ``poolbench.run`` -> the table (or JSON) and the verdicts on stdout, notes and
    counts on stderr."""
    given = {k: v for k, v in options.items() if v is not None}
    result = api.run(name, list(pools), command="poolbench " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
                     **given)
    if not is_main_process():
        return
    if as_json:
        table = result.table.reset_index() if result.table.index.name else result.table
        tuned = {"selection": result.selection} if result.selection else {}  # --recipe tuned
        click.echo(json.dumps({"rows": result.rows, "table": json.loads(table.to_json(orient="records")),
                               "verdicts": result.verdicts, **tuned}, indent=1, default=str))
        return
    shown = compact(result.table) if wide else result.narrow
    click.echo(tabulate(shown, headers="keys", tablefmt="github", floatfmt=".2f"))
    for line in result.verdicts:
        click.echo(line)
    note = None if wide else narrow_note(result.table, result.reference)
    for note in ([note] if note else []) + result.notes:
        click.echo(f"note: {note}", err=True)
    for r in result.errors:
        click.echo(f"poolbench: {r.get('pool')}: {r['error']}", err=True)
    click.echo(f"{name}: {result.cells} cells ({result.computed} computed, {result.skipped} from the store) "
               f"in {result.results}/{name}", err=True)
    if result.errors:
        raise click.exceptions.Exit(1)


def suite_command(name: str) -> click.Command:
    suite = get_suite(name)

    def callback(pools, as_json, wide, **options):
        execute_suite(name, pools, as_json, wide, options)

    return click.Command(name, params=run_parameters(suite), callback=callback, help=suite.summary,
                         short_help=suite.summary, context_settings=CONTEXT)


def run_all_command() -> click.Command:
    def callback(pools, as_json, wide, **options):
        if options.get("seed") is None and options.get("seeds") is None:
            options = {**options, "seeds": "3"}
        failures = []
        for name in list_suites():
            click.echo(f"== {name}", err=True)
            params = dict(options)
            if not get_suite(name).parallel:  # timed side by side: never spread over processes
                params["executor"] = "sequential"
            if not isinstance(get_suite(name), TrainedSuite):  # no classifier's recipe to tune
                if params.get("recipe") == "tuned":
                    click.echo(f"note: {name} trains no classifier, so --recipe tuned does not apply "
                               "to it: the shared recipe", err=True)
                params["recipe"] = None
            try:
                execute_suite(name, pools, as_json, wide, params)
            except click.exceptions.Exit as exc:
                if exc.exit_code:
                    failures.append(name)
        if failures:
            click.echo(f"poolbench: cells failed in {', '.join(failures)}; see the messages above", err=True)
            raise click.exceptions.Exit(1)

    return click.Command(
        "all", params=run_parameters(), callback=callback, context_settings=CONTEXT,
        short_help="Every suite for the given pools, on 3 training seeds by default.",
        help="Every suite for the given pools (each reuses the trained models of the others), on 3 "
             "training seeds unless --seed/--seeds says otherwise, so that every table measures "
             "training noise; the suites' own options keep their preset values.")


class SuiteCommands(click.Group):
    """`poolbench run NAME`: one command per registered suite, made when asked for."""

    def list_commands(self, ctx) -> list[str]:
        return [*list_suites(), "all"]

    def get_command(self, ctx, name: str) -> click.Command | None:
        if name == "all":
            return run_all_command()
        return suite_command(name) if name in list_suites() else None


cli.add_command(SuiteCommands("run", context_settings=CONTEXT,
                              help="Run a benchmark suite; finished cells are stored and skipped on the next run."))


def show_status(records: list[dict], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(records, indent=1))
        return
    if records:
        click.echo(tabulate(records, headers="keys", tablefmt="github", disable_numparse=True))
    click.echo(summary(records), err=True)


def status_command(name: str) -> click.Command:
    def callback(pools, as_json, wide, **options):
        given = {k: v for k, v in options.items() if v is not None}
        cells, results = api.status_cells(name, list(pools), **given)
        show_status(cell_status(results, cells), as_json)

    return click.Command(name, params=run_parameters(get_suite(name)), callback=callback,
                         context_settings=CONTEXT, short_help=f"The cells of `poolbench run {name} ...`.",
                         help=f"Where each cell of `poolbench run {name}` with these options stands: the "
                              "same options as that command.")


class StatusCommands(click.Group):
    """`poolbench status`: the whole store; `poolbench status NAME ...`: one command's cells."""

    def list_commands(self, ctx) -> list[str]:
        return list_suites()

    def get_command(self, ctx, name: str) -> click.Command | None:
        return status_command(name) if name in list_suites() else None


@click.pass_context
def _status_all(ctx, results, as_json):
    if ctx.invoked_subcommand is None:
        show_status(cell_status(results or env_default("results", "results")), as_json)


cli.add_command(StatusCommands(
    "status", context_settings=CONTEXT, invoke_without_command=True, callback=_status_all,
    params=[click.Option(["--results"], default=None, type=click.Path(),
                         help="Result store (default ./results, or POOLBENCH_RESULTS)."),
            click.Option(["--json", "as_json"], is_flag=True, help="Print the records as JSON.")],
    help="Where cells stand: done, running (with their Slurm job), failed (the first line of the "
         "error and the task's log) or missing; for every cell of the store and its Slurm "
         "submissions, or, after a suite name and a run's options, for that command's cells."))


@cli.command("report", context_settings=CONTEXT)
@click.option("--results", multiple=True, type=click.Path(),
              help="Result store (default ./results); repeat it to merge stores into one report "
                   "(a cell is read once; two stores with different values for one cell are an error).")
@click.option("--out", default="reports/latest", show_default=True, type=click.Path(),
              help="Folder for report.md, report.html, plots, results.csv and results.json "
                   "(only files an earlier report wrote there are replaced or removed).")
@click.option("--title", default=None, help="Report title.")
@click.option("--reference", default=None, help="Reference pool for CE/FR (default: the one the runs used).")
@click.option("--no-illustrations", is_flag=True, help="Skip the LiftPool sub-band and up-pooling figures.")
@click.option("--strict", is_flag=True, help="Refuse to build when a stored cell fails verification "
              "(default: leave it out with a warning line).")
@plugin_option
def report_cmd(results, out, title, reference, no_illustrations, strict):
    """Write report.md, report.html (one self-contained page: sortable, filterable tables), PNG
    plots, results.csv and results.json from whatever suites are in the stores."""
    path = build_report(list(results) or [env_default("results", "results")], out, title=title,
                        reference=reference, illustrations=not no_illustrations, strict=strict)
    click.echo(str(path))


def cli_reference() -> str:
    """The command-line reference in markdown (docs/cli.md), generated from the commands, so
    from the option declarations: every command, its help and every option with its help."""
    lines = ["# Command-line reference", "",
             "Generated by `poolbench docs --out docs/cli.md` from the option declarations "
             "(`api.RunOptions`, `training.runtime.TrainSettings` and each suite's `Options`); "
             "a test fails when this file is stale.", ""]

    def walk(command: click.Command, path: list[str], parent: click.Context | None) -> None:
        ctx = click.Context(command, info_name=path[-1], parent=parent, **command.context_settings)
        lines.extend([f"## `{' '.join(path)}`", "", (command.help or "").strip(), ""])
        records = [p.get_help_record(ctx) for p in command.get_params(ctx)]
        records = [r for r in records if r]
        if records:
            lines.extend(["| option | what it does |", "|---|---|"])
            lines.extend(f"| `{flag}` | {text.replace('|', '/')} |" for flag, text in records)
            lines.append("")
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                walk(command.get_command(ctx, name), [*path, name], ctx)

    walk(cli, ["poolbench"], None)
    return "\n".join(lines).rstrip() + "\n"


@cli.command("docs", context_settings=CONTEXT)
@click.option("--out", default=None, type=click.Path(dir_okay=False),
              help="Write to this file instead of stdout (docs/cli.md in the repository).")
def docs_cmd(out):
    """Print the command-line reference (markdown), generated from the option declarations."""
    text = cli_reference()
    if out is None:
        click.echo(text, nl=False)
    else:
        try:
            atomic_write_text(Path(out), text)
        except OSError as exc:
            raise UsageError(f"cannot write {out} ({exc.strerror or exc}); pass --out a writable file "
                             "path") from exc


def main(argv=None) -> int:
    """Entry point: user errors become one line on stderr (exit 2 usage, 1 failure)."""
    try:
        with one_line_warnings():
            rc = cli.main(args=argv, prog_name="poolbench", standalone_mode=False)
        if isinstance(rc, int):  # click returns (not raises) Exit codes without standalone mode
            return rc
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("poolbench: interrupted", err=True)
        return 130
    except click.exceptions.ClickException as exc:  # click's own usage errors
        hint = ""
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            hint = f" (see `{exc.ctx.command_path} -h`)"
        click.echo(f"poolbench: error: {exc.format_message()}{hint}", err=True)
        return exc.exit_code
    except PoolbenchError as exc:
        click.echo(f"poolbench: error: {exc}", err=True)
        return exc.exit_code
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        # a write that atomic.py did not make (a library's own file): still one line
        click.echo(f"poolbench: error: {disk_full(exc.filename or 'a file being written', exc)}", err=True)
        return 1
    except KeyboardInterrupt:
        click.echo("poolbench: interrupted; finished cells are kept, run again to resume", err=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

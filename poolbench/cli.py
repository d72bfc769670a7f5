"""The `poolbench` command line."""
from __future__ import annotations

import json
import shlex
import sys

import click
from tabulate import tabulate

from . import api
from .version import __version__
from .config import TrainConfig, env_default, load_preset
from .errors import PoolbenchError, one_line_warnings
from .models import PADDINGS, model_spec
from .pool_table import pool_rows
from .process import is_main_process
from .registry import load_plugin
from .report import build_report
from .suites import get_suite
from .suites.intervals import compact

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _load_plugins(ctx, param, values):
    for item in values or ():
        load_plugin(item)
    return values


def plugin_option(fn):
    """`--plugin PATH_OR_MODULE`, repeatable, accepted on every command."""
    return click.option(
        "--plugin", "plugins", multiple=True, metavar="PATH_OR_MODULE", expose_value=False,
        callback=_load_plugins, is_eager=True,
        help="Load pooling operators from a .py file or importable module (repeatable).",
    )(fn)


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="poolbench")
@plugin_option
def cli():
    """poolbench: fair, reproducible comparisons of pooling layers in ConvNets."""


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
            "source": r["source"],
            "version": r["version"],
            "status": r["status"] + (f": {r['error']}" if r["error"] else ""),
        }
        for r in rows
    ]
    click.echo(tabulate(table, headers="keys", tablefmt="github"))


# --- run ---------------------------------------------------------------------------------------

def run_options(fn):
    """Options shared by every `poolbench run SUITE` command."""
    options = [
        click.option("--pool", "pools", multiple=True, metavar="SPEC",
                     help="Pool spec, e.g. max or lift:kernel_size=7 (repeatable)."),
        click.option("--model", default=None, help="Backbone (default from the preset: convnet)."),
        click.option("--padding", type=click.Choice(PADDINGS), default=None,
                     help="Padding of the backbone's convs (default zeros): sets the model's option, "
                          "e.g. convnet:padding=circular."),
        click.option("--dataset", default=None, help="shapes | photos | cifar10 | cifar100 | imagefolder:PATH."),
        click.option("--data-root", default=None, type=click.Path(), help="Where datasets live."),
        click.option("--epochs", type=int, default=None, help="Override the preset's epochs."),
        click.option("--batch-size", type=int, default=None),
        click.option("--lr", type=float, default=None),
        click.option("--train-size", type=int, default=None, help="Generated data: training images."),
        click.option("--test-size", type=int, default=None, help="Generated data: test images."),
        click.option("--seed", type=int, default=None, help="One run seed (default: the preset's seeds)."),
        click.option("--seeds", default=None, metavar="LIST|COUNT",
                     help="Training seeds: 0,1,2 or a count (3 = 0,1,2); the data seed stays fixed."),
        click.option("--data-seed", type=int, default=None,
                     help="Seed of the generated data, corruptions, perturbations and shifts (default 0)."),
        click.option("--device", default=None, help="cpu (default) or cuda[:N]."),
        click.option("--results", default=None, type=click.Path(), help="Result store (default ./results)."),
        click.option("--config", "--preset", "preset", default=None,
                     help="Preset name in suites/ (quick, cifar100-vgg13, ...) or a TOML file."),
        click.option("--executor", type=click.Choice(["sequential", "process", "slurm"]), default="sequential",
                     show_default=True, help="Where cells run."),
        click.option("--workers", type=int, default=2, show_default=True, help="Processes for --executor process."),
        click.option("--threads", type=int, default=None,
                     help="torch threads per process (default: POOLBENCH_THREADS, else the free cores "
                          "shared among the workers)."),
        click.option("--amp", type=click.Choice(["off", "bf16", "fp16"]), default=None,
                     help="Mixed-precision training (default bf16 on CUDA, off on CPU); part of the recipe."),
        click.option("--checkpoint-minutes", type=float, default=10.0, show_default=True,
                     help="Resume checkpoints at every epoch end and at most this many minutes apart."),
        click.option("--loader-workers", type=int, default=None,
                     help="DataLoader processes for training (default 0, image folders up to 8)."),
        click.option("--eval-every", type=int, default=None,
                     help="Epochs between learning-curve test errors (default 1; image folders 0: none)."),
        click.option("--compile-training", is_flag=True, help="torch.compile the model for training."),
        click.option("--checkpoint", default=None, type=click.Path(),
                     help="Evaluate this trained model instead of training (one pool)."),
        click.option("--no-progress", is_flag=True, help="No progress bars."),
        click.option("--json", "as_json", is_flag=True, help="Print result rows as JSON on stdout."),
        plugin_option,
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@cli.group("run", context_settings=CONTEXT)
def run_group():
    """Run a benchmark suite; finished cells are stored and skipped on the next run."""


def execute_suite(suite_name: str, args: dict, options: dict):
    """Flags -> ``poolbench.run`` -> the table (or JSON) on stdout, notes and counts on stderr."""
    flags = {k: v for k, v in args.items() if k not in ("pools", "as_json", "no_progress", "padding")}
    if args.get("padding"):
        # a backbone option: it rides in the model name, which configs, hashes and rows record
        model = flags.get("model") or load_preset(flags.get("preset"))["train"].get("model", TrainConfig.model)
        flags["model"] = model_spec(model, args["padding"])
    result = api.run(suite_name, list(args["pools"]), progress=not args["no_progress"],
                     command="poolbench " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
                     **flags, **options)
    if not is_main_process():
        return
    if args["as_json"]:
        table = result.table.reset_index() if result.table.index.name else result.table
        click.echo(json.dumps({"rows": result.rows, "table": json.loads(table.to_json(orient="records"))},
                              indent=1, default=str))
        return
    click.echo(tabulate(compact(result.table), headers="keys", tablefmt="github", floatfmt=".2f"))
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    for r in result.errors:
        click.echo(f"poolbench: {r.get('pool')}: {r['error']}", err=True)
    click.echo(f"{suite_name}: {result.cells} cells ({result.computed} computed, {result.skipped} from the store) "
               f"in {result.results}/{suite_name}", err=True)
    if result.errors:
        raise click.exceptions.Exit(1)


@run_group.command("robustness", context_settings=CONTEXT)
@run_options
@click.option("--reference", default=None,
              help="Pool that normalises CE (default max; alexnet only with official ImageNet-C).")
@click.option("--corruptions", default=None, help="common (15) | extra (4) | all (19) | NAME,NAME...")
@click.option("--severities", default=None, help="Comma-separated severities (default 1,2,3,4,5).")
@click.option("--subset", type=int, default=None, help="Test images to corrupt (default from the preset).")
@click.option("--corruption-data", type=click.Path(), default=None,
              help="Official CIFAR-10-C/-100-C (.npy) or ImageNet-C (folders) instead of generated.")
@click.option("--corruption-params", default=None,
              type=click.Choice(["auto", "cifar", "tinyimagenet", "imagenet"]),
              help="Parameter set of generated corruptions (default auto: CIFAR-10-C's near 32 px, "
                   "Tiny-ImageNet-C's near 64, ImageNet-C's near 224).")
@click.option("--corruption-engine", default=None, type=click.Choice(["auto", "torch", "reference"]),
              help="Generator (default auto: torch for the corruptions tested equal to the reference).")
@click.option("--unnormalized-over", default=None, type=click.Choice(["benchmark", "all"]),
              help="Unnormalised mCE over the 15 benchmark corruptions (default) or all evaluated "
                   "(the official script's mean over 19).")
@click.option("--on-the-fly", is_flag=True, default=None,
              help="Generate each corrupted set inside the evaluation (torch engine on --device), "
                   "cache nothing: for sets too large for the disk; the same images.")
def run_robustness(reference, corruptions, severities, subset, corruption_data, corruption_params,
                   corruption_engine, unnormalized_over, on_the_fly, **args):
    """Corruption robustness: clean error, CE per corruption, mCE, relative and unnormalised mCE."""
    execute_suite("robustness", args, {"reference": reference, "corruptions": corruptions,
                                       "severities": severities, "subset": subset,
                                       "corruption_data": corruption_data,
                                       "corruption_params": corruption_params,
                                       "corruption_engine": corruption_engine,
                                       "unnormalized_over": unnormalized_over,
                                       "on_the_fly": on_the_fly})


@run_group.command("perturbation", context_settings=CONTEXT)
@run_options
@click.option("--reference", default=None, help="Pool that normalises FP and T5D (default max).")
@click.option("--perturbations", default=None, help="test | validation | all | NAME,NAME...")
@click.option("--subset", type=int, default=None, help="Test images turned into sequences.")
@click.option("--perturbation-data", type=click.Path(), default=None,
              help="Official CIFAR-10-P/-100-P (.npy files) instead of generated sequences.")
@click.option("--corruption-params", default=None,
              type=click.Choice(["auto", "cifar", "tinyimagenet", "imagenet"]),
              help="Schedule of generated sequences (default auto: CIFAR-P's near 32 px, "
                   "Tiny-ImageNet-P's near 64, ImageNet-P's near 224).")
@click.option("--difficulty", type=click.IntRange(1, 3), default=None,
              help="ImageNet-P's temporal step: frames compared d apart (default 1; noise: vs frame 0).")
@click.option("--perturbation-engine", default=None, type=click.Choice(["auto", "torch", "reference"]),
              help="Generator (default auto: torch for the perturbations tested equal to the reference).")
def run_perturbation(reference, perturbations, subset, perturbation_data, corruption_params, difficulty,
                     perturbation_engine, **args):
    """Perturbation stability: flip probability, FR/mFR and T5D/mT5D against a reference pool."""
    execute_suite("perturbation", args, {"reference": reference, "perturbations": perturbations,
                                         "subset": subset, "perturbation_data": perturbation_data,
                                         "corruption_params": corruption_params, "difficulty": difficulty,
                                         "perturbation_engine": perturbation_engine})


@run_group.command("shift", context_settings=CONTEXT)
@run_options
@click.option("--subset", type=int, default=None, help="Test images evaluated.")
@click.option("--passes", type=int, default=None, help="Random offset draws averaged (default 5).")
@click.option("--max-shift", type=int, default=None, help="k: crop offsets in {0..2k}, sweep 0..k.")
def run_shift(subset, passes, max_shift, **args):
    """Shift consistency under crop and circular shifts, and accuracy along a diagonal shift."""
    execute_suite("shift", args, {"subset": subset, "passes": passes, "max_shift": max_shift})


@run_group.command("efficiency", context_settings=CONTEXT)
@run_options
@click.option("--baseline", default=None, help="Pool the ratios divide by, timed in the same run (default max).")
@click.option("--levels", default=None, help="layer,model (default both).")
@click.option("--layer-shapes", default=None, help="NxCxHxW,... (default 32x64x56x56,32x256x14x14).")
@click.option("--dtypes", default=None, help="float32,bfloat16 (default both).")
@click.option("--formats", default=None, help="nchw,channels_last (default both).")
@click.option("--compile/--no-compile", "compile_", default=None, help="Also time torch.compile, with compile time.")
@click.option("--repeats", type=int, default=None, help="Timed repetitions per pool (default 20).")
@click.option("--clock", type=click.Choice(["wall", "thread", "process"]), default=None,
              help="wall (default), or CPU time of the thread/process (robust on a shared machine).")
def run_efficiency(baseline, levels, layer_shapes, dtypes, formats, compile_, repeats, clock, **args):
    """Parameters, buffers, FLOPs, latency and memory per pool, with ratios to a baseline."""
    execute_suite("efficiency", args, {"baseline": baseline, "levels": levels, "layer_shapes": layer_shapes,
                                       "dtypes": dtypes, "formats": formats, "compile": compile_,
                                       "repeats": repeats, "clock": clock})


@run_group.command("segmentation", context_settings=CONTEXT)
@run_options
@click.option("--variants", default=None,
              help="max_unpool,max_unpool_blur,lift,bilinear or 'all' (default: all four, or those of --pool).")
@click.option("--no-reconstruction", is_flag=True, help="Skip the PSNR reconstruction test.")
def run_segmentation(variants, no_reconstruction, **args):
    """SegNet with paired down/up pooling: mIoU per up-pooling variant; reconstruction PSNR."""
    execute_suite("segmentation", args, {"variants": variants,
                                         "reconstruction": False if no_reconstruction else None})


@run_group.command("all", context_settings=CONTEXT)
@run_options
@click.pass_context
def run_all(ctx, **args):
    """Every suite for the given pools: accuracy, robustness, perturbation, shift, efficiency,
    segmentation (each reuses the trained models of the others), on 3 training seeds unless
    --seed/--seeds says otherwise, so that every table measures training noise."""
    if args.get("seed") is None and args.get("seeds") is None:
        args = {**args, "seeds": "3"}
    failures = []
    for name, command in (("accuracy", run_accuracy), ("robustness", run_robustness),
                          ("perturbation", run_perturbation), ("shift", run_shift),
                          ("efficiency", run_efficiency), ("segmentation", run_segmentation)):
        click.echo(f"== {name}", err=True)
        params = dict(args)
        if not get_suite(name).parallel:  # timed side by side: never spread over processes
            params["executor"] = "sequential"
        try:
            ctx.invoke(command, **params)
        except click.exceptions.Exit as exc:
            if exc.exit_code:
                failures.append(name)
    if failures:
        click.echo(f"poolbench: cells failed in {', '.join(failures)}; see the messages above", err=True)
        raise click.exceptions.Exit(1)


@run_group.command("accuracy", context_settings=CONTEXT)
@run_options
@click.option("--reference", default=None,
              help="Pool the differences are taken to, when the run has it (default max).")
def run_accuracy(reference, **args):
    """Train each pool in the backbone and report top-1/top-5 error, parameters and cost."""
    execute_suite("accuracy", args, {"reference": reference})


@cli.command("report", context_settings=CONTEXT)
@click.option("--results", default=None, type=click.Path(), help="Result store (default ./results).")
@click.option("--out", default="reports/latest", show_default=True, type=click.Path(),
              help="Folder for report.md, plots and results.csv.")
@click.option("--title", default=None, help="Report title.")
@click.option("--reference", default=None, help="Reference pool for CE/FR (default: the one the runs used).")
@click.option("--no-illustrations", is_flag=True, help="Skip the LiftPool sub-band and up-pooling figures.")
@plugin_option
def report_cmd(results, out, title, reference, no_illustrations):
    """Write report.md, PNG plots and results.csv from whatever suites are in the store."""
    path = build_report(results or env_default("results", "results"), out, title=title,
                        reference=reference, illustrations=not no_illustrations)
    click.echo(str(path))


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
    except KeyboardInterrupt:
        click.echo("poolbench: interrupted; finished cells are kept, run again to resume", err=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

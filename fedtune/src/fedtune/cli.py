"""The ``fedtune`` command: run and compare experiments, inspect datasets, benchmark.

Bad input (a config error, an unknown name) prints one line and exits with status 2,
before anything is written.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from fedtune.config import ConfigError, load_experiment
from fedtune.data.partition import PARTITIONERS
from fedtune.deploy.cli import flower_app
from fedtune.errors import RunInterrupted
from fedtune.measure.cli import bench_app
from fedtune.registry import UnknownNameError

app = typer.Typer(
    help="Federated finetuning research: Spry, Flash, Flow and their baselines.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
datasets_app = typer.Typer(help="List datasets and inspect partitions.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")
examples_app = typer.Typer(help="The example experiments that ship with fedtune.", no_args_is_help=True)
app.add_typer(examples_app, name="examples")
app.add_typer(bench_app, name="bench")
app.add_typer(flower_app, name="flower")

console = Console()
if not console.is_terminal:  # logs and pipes: no 80-column wrapping of the tables
    console.width = 120
err_console = Console(stderr=True)

ThreadsOption = Annotated[
    int | None,
    typer.Option(help="torch CPU threads (default: torch's choice); 1 is often fastest for small models on busy machines", min=1),
]

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="override a field, e.g. --set algorithm.lr=0.1 --set data.alpha=0.3 (values are TOML)"),
]

UnsetOption = Annotated[
    list[str] | None,
    typer.Option("--unset", help="remove a key or a whole table so its default applies, e.g. --unset drift --unset algorithm.mu"),
]

PluginOption = Annotated[
    list[str] | None,
    typer.Option("--plugin", "-p", help="import a module (or .py file) registering your own algorithms, server optimizers, datasets, models"),
]


def _print_version(value: bool) -> None:
    if value:
        import torch

        import fedtune

        console.print(f"fedtune {fedtune.__version__} (torch {torch.__version__})", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", "-V", callback=_print_version, is_eager=True, help="print the version and exit")] = False,
) -> None:
    pass  # the options of the fedtune command itself; its help is the app's


def fail(message: str, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)  # [extras] are not markup
    raise typer.Exit(code)


def set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def friendly_errors(fn: Callable) -> Callable:
    """Turn expected errors into one line and an exit status (2: bad input, 1: run failed)."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        from fedtune.engine import RunError

        try:
            return fn(*args, **kwargs)
        except (ConfigError, UnknownNameError) as err:
            fail(str(err), 2)
        except RunError as err:
            fail(str(err), 1)
        except RunInterrupted as stop:
            err_console.print(
                f"interrupted after round {stop.round} of {stop.rounds}; report: {stop.run_dir / 'report.md'}\n"
                f"continue with: fedtune run --resume {shlex.quote(str(stop.run_dir))}",
                highlight=False, soft_wrap=True, markup=False,
            )
            raise typer.Exit(130) from None

    return wrapper


@app.command()
@friendly_errors
def run(
    experiment: Annotated[Path | None, typer.Argument(help="experiment TOML file")] = None,
    overrides: SetOption = None,
    unset: UnsetOption = None,
    plugin: PluginOption = None,
    out: Annotated[Path | None, typer.Option(help="run folder (default: the experiment's output, else runs/<name>)")] = None,
    resume: Annotated[
        Path | None,
        typer.Option(help="continue the run in this folder from its newest checkpoint; --set rounds=N extends it to N rounds"),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing run in the output folder")] = False,
    seeds: Annotated[str | None, typer.Option(help="run once per seed, e.g. 0,1,2 or 0-4; a table of mean ± sd")] = None,
    sweep: Annotated[
        list[str] | None,
        typer.Option(help="run a grid: --sweep algorithm.lr=0.01,0.03,0.1 (repeat for more keys); runs only what is missing"),
    ] = None,
    metric: Annotated[str, typer.Option(help="what picks the best setting of --seeds/--sweep: final_test_accuracy, best_test_accuracy, final_test_loss")] = "final_test_accuracy",
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
    threads: ThreadsOption = None,
) -> None:
    """Run one experiment; writes config.toml, metrics.jsonl, checkpoints and report.md.

    With --seeds or --sweep: one run per seed and setting, each in its own folder under
    the run folder, and sweep.md with mean ± sd over seeds and the best setting.
    """
    set_threads(threads)
    from fedtune.engine import resume_experiment, run_experiment
    from fedtune.report import rich_table, summarize

    if resume is not None:
        if experiment is not None or out is not None or overwrite or plugin or seeds or sweep or unset:
            fail("--resume continues a run folder with its own config.toml (plugins included); give no experiment file, --out, --overwrite, --plugin, --unset, --seeds or --sweep")
        result = resume_experiment(resume, progress=not quiet, overrides=overrides or [])
    elif seeds is not None or sweep:
        if experiment is None:
            fail("--seeds and --sweep need an experiment TOML file")
        run_sweep(experiment, overrides or [], unset or [], plugin or [], out, seeds, sweep or [], metric, overwrite, quiet)
        return
    else:
        if experiment is None:
            fail("give an experiment TOML file, or --resume RUN_DIR")
        exp = load_experiment(experiment, overrides or [], plugins=plugin, unset=unset)
        if out is not None:
            exp.output = str(out)
        result = run_experiment(exp, overwrite=overwrite, progress=not quiet)
    console.print(rich_table([summarize(result.experiment.name, result.metrics)], title=str(result.run_dir)))
    console.print(f"report: {result.run_dir / 'report.md'}")


def run_sweep(
    experiment: Path, overrides: list[str], unset: list[str], plugins: list[str], out: Path | None, seeds: str | None, sweep: list[str], metric: str, overwrite: bool, quiet: bool
) -> None:
    """``run --seeds/--sweep``: every missing run of the grid, then its table (:mod:`fedtune.sweep`)."""
    from rich.table import Table

    from fedtune import sweep as grids
    from fedtune.engine import run_experiment

    if metric not in grids.METRICS:
        fail(f"--metric {metric!r}: choose one of {', '.join(grids.METRICS)}")
    axes = [grids.parse_sweep(text) for text in sweep]
    root, points = grids.grid(experiment, overrides, axes, grids.parse_seeds(seeds) if seeds is not None else None, out, plugins, unset)
    todo = iter(range(1, len(points) + 1))

    def one(exp, how: str) -> list[dict]:
        point = next(p for p in points if p.exp is exp)
        console.print(f"[{next(todo)}] {grids.setting_label(point.setting)} seed {point.seed}: {how} -> {exp.run_dir()}", highlight=False)
        return run_experiment(exp, resume=how == "resume", overwrite=how == "overwrite", progress=not quiet).metrics

    try:
        results = grids.run_grid(points, one, overwrite)
    except RunInterrupted as stop:
        err_console.print(f"interrupted after round {stop.round} of {stop.rounds} of {stop.run_dir}; run the same command again to continue the grid",
                          highlight=False, soft_wrap=True, markup=False)
        raise typer.Exit(130) from None
    done = sum(how == "done" for _, _, how in results)
    rows, best = grids.summarize_grid([(p, m) for p, m, _ in results], metric)
    path = grids.write_sweep(root, rows, best, metric)
    headers, cells = grids.table_rows(rows)
    table = Table(title=f"{points[0].exp.name}: {len(rows)} settings × {len(points) // len(rows)} seeds (mean ± sd)")
    for h in headers:
        table.add_column(h, justify="left" if h == "setting" else "right")
    for row in cells:
        table.add_row(*row)
    console.print(table)
    console.print(f"ran {len(points) - done}, found {done} finished")
    if best is not None:
        console.print(f"best ({metric}): {best['setting']}", highlight=False)
    console.print(f"table: {path}")


@app.command()
@friendly_errors
def compare(
    entries: Annotated[
        list[Path], typer.Argument(help="experiment TOML files (run into --out/<name>) and run folders (read as they are)", metavar="EXPERIMENT_OR_RUN...")
    ],
    out: Annotated[Path, typer.Option(help="folder for the table, overlaid plots and each experiment's run folder")] = Path("runs/compare"),
    overrides: SetOption = None,
    unset: UnsetOption = None,
    set_for: Annotated[
        list[str] | None,
        typer.Option("--set-for", help="override one experiment: --set-for NAME:algorithm.lr=0.1 (NAME as in the table)"),
    ] = None,
    name: Annotated[list[str] | None, typer.Option("--name", help="the runs' names in the table, one per entry, in order (for same-named experiments)")] = None,
    plugin: PluginOption = None,
    target: Annotated[
        float | None, typer.Option(help="test accuracy to reach: the table adds rounds, seconds and MB to reach it (default: 95 % of the lowest best accuracy)")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="replace runs in --out/<name> that hold another configuration")] = False,
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
    threads: ThreadsOption = None,
) -> None:
    """Compare experiments on the same data partition; print and write one table and overlaid plots.

    An experiment file runs into --out/<name> unless that folder already holds the same
    run (then it is read back, or resumed if unfinished); a folder holding another
    configuration is refused without --overwrite. --set applies to every experiment file
    (run folders keep their config.toml). Nothing in --out is removed but the runs
    --overwrite replaces.
    """
    set_threads(threads)
    from fedtune.data import load_federated
    from fedtune.engine import run_experiment
    from fedtune.engine.loop import CONFIG_FILE, METRICS_FILE, _read_metrics
    from fedtune.report import rich_table, write_comparison
    from fedtune.report.plots import data_title
    from fedtune.sweep import Point, run_grid

    if name and len(name) != len(entries):
        fail(f"--name: give one name per entry ({len(entries)}), got {len(name)}")
    per: dict[str, list[str]] = {}
    for text in set_for or []:
        who, sep, override = text.partition(":")
        if not sep or "=" not in override:
            fail(f"--set-for {text!r}: expected NAME:key.sub=value")
        per.setdefault(who, []).append(override)
    loaded = []  # (name, experiment, run folder to read or None)
    for i, path in enumerate(entries):
        if path.is_dir():
            if not (path / CONFIG_FILE).is_file() or not (path / METRICS_FILE).is_file():
                fail(f"{path}: a folder, but not a fedtune run folder (no {CONFIG_FILE} and {METRICS_FILE})")
            exp = load_experiment(path / CONFIG_FILE)
            loaded.append((name[i] if name else exp.name, exp, path))
        else:
            exp = load_experiment(path, overrides or [], plugins=plugin, unset=unset)
            label = name[i] if name else exp.name
            if per.get(label):
                exp = load_experiment(path, [*(overrides or []), *per[label]], plugins=plugin, unset=unset)
            loaded.append((label, exp, None))
    names = [label for label, _, _ in loaded]
    if len(set(names)) != len(names):
        fail(f"compare: the runs' names must differ, got {names}; name them with --name, once per entry")
    for who in per:
        if who not in names:
            fail(f"--set-for {who}:...: no experiment named {who!r}; the names are {', '.join(names)}")
        if next(folder for label, _, folder in loaded if label == who) is not None:
            fail(f"--set-for {who}:...: {who} is a run folder; its config.toml is fixed")
    first = loaded[0][1]
    for label, e, _ in loaded[1:]:
        if e.data != first.data or e.seed != first.seed:
            fail(f"compare: {label} uses another [data] table or seed than {names[0]}; a comparison needs the same partition")
    points = []
    for label, e, folder in loaded:
        if folder is None:
            e.output = str(out / label)
            points.append(Point({}, e.seed, e))
    fed = load_federated(first.data, first.seed) if points else None

    def one(exp, how: str) -> list[dict]:
        return run_experiment(exp, resume=how == "resume", overwrite=how == "overwrite", progress=not quiet, fed=fed).metrics

    ran = {id(p.exp): metrics for p, metrics, _ in run_grid(points, one, overwrite)}  # every folder checked before the first run
    runs = {label: (_read_metrics(folder / METRICS_FILE) if folder is not None else ran[id(e)]) for label, e, folder in loaded}
    if target is None:
        from fedtune.report.plots import series

        bests = [max(acc) for m in runs.values() if (acc := series(m, "test_accuracy")[1])]
        target = round(0.95 * min(bests), 4) if bests else None
    title = data_title(first)
    rows, path = write_comparison(out, runs, target, title)
    console.print(rich_table(rows, title=title + (f"; target accuracy {target:.4f}" if target is not None else "")))
    console.print(f"comparison: {path}")


@examples_app.command("list")
def examples_list() -> None:
    """The shipped examples: name and what each runs."""
    from rich.table import Table

    from fedtune.example_files import examples_dir, list_examples

    table = Table(title=f"examples ({examples_dir()})")
    table.add_column("name", no_wrap=True)
    table.add_column("what it runs")
    for example in list_examples():
        table.add_row(example.name, example.description)
    console.print(table)
    console.print("copy one with: fedtune examples copy NAME [--to DIR]", highlight=False)


@examples_app.command("copy")
@friendly_errors
def examples_copy(
    names: Annotated[list[str] | None, typer.Argument(help="examples to copy (default: all)")] = None,
    to: Annotated[Path, typer.Option(help="folder to copy them into")] = Path("."),
    overwrite: Annotated[bool, typer.Option(help="replace files that exist")] = False,
) -> None:
    """Copy shipped examples into a folder, to run or edit them."""
    from fedtune.example_files import copy_examples

    for path in copy_examples(names or [], to, overwrite):
        console.print(f"{path}", highlight=False)


@datasets_app.command("list")
@friendly_errors
def datasets_list(plugin: PluginOption = None) -> None:
    """The registered datasets, installed plugins' included (plus hf:<id-or-path> for Hugging Face datasets)."""
    from rich.table import Table

    from fedtune.data import DATASETS
    from fedtune.plugins import load_entry_point_plugins, load_plugins

    load_entry_point_plugins()
    load_plugins(plugin or [])

    table = Table(title="datasets")
    table.add_column("name")
    table.add_column("description")
    for name in DATASETS.names():
        doc = (DATASETS.get(name).__doc__ or "").strip().splitlines()
        table.add_row(name, doc[0] if doc else "")
    table.add_row("hf:<id-or-path>", "a Hugging Face dataset (hub id with network, or local files)")
    console.print(table)


@datasets_app.command("show")
@friendly_errors
def datasets_show(
    name: Annotated[str, typer.Argument(help="dataset name, e.g. mnist")],
    partition: Annotated[str, typer.Option(help=f"how examples are split: {', '.join(PARTITIONERS.names())}")] = "iid",
    alpha: Annotated[float, typer.Option(help="Dirichlet α (dirichlet partition)")] = 0.5,
    clients: Annotated[int, typer.Option(help="number of clients (iid and dirichlet)")] = 10,
    seed: Annotated[int, typer.Option(help="partition seed")] = 0,
    option: Annotated[list[str] | None, typer.Option("--option", "-o", help="dataset option key=value (TOML value)")] = None,
    out: Annotated[Path, typer.Option(help="folder for the label-distribution plot")] = Path("runs/datasets"),
    max_rows: Annotated[int, typer.Option(help="clients shown in the table")] = 20,
    plugin: PluginOption = None,
) -> None:
    """Per-client example counts of a partition, and a label-distribution plot."""
    from rich.table import Table

    from fedtune.config import DataConfig, apply_overrides, format_validation_error
    from fedtune.data import load_federated
    from fedtune.data.show import (
        describe,
        empty_splits,
        partition_label,
        plot_label_distribution,
        summarize,
    )
    from fedtune.plugins import load_plugins

    load_plugins(plugin or [])

    raw = apply_overrides({"name": name, "partition": partition, "alpha": alpha, "num_clients": clients, "options": {}}, [f"options.{o}" for o in option or []])
    try:
        cfg = DataConfig.model_validate(raw)
    except ValidationError as err:
        fail(format_validation_error(err, prefix="data."))
    fed = load_federated(cfg, seed)
    rows = describe(fed)
    table = Table(title=f"{name}: {fed.num_clients} clients, {partition} partition")
    for col in rows[0]:
        table.add_column(str(col), justify="right")
    for row in rows[:max_rows]:
        table.add_row(*(str(v) for v in row.values()))
    console.print(table)
    if len(rows) > max_rows:
        console.print(f"... {len(rows) - max_rows} more clients")
    stats = summarize(fed)
    console.print(
        f"{stats['examples']} examples (train {stats['train']}, val {stats['val']}, test {stats['test']}); per client "
        f"min {stats['min_per_client']}, median {stats['median_per_client']:g}, max {stats['max_per_client']}"
        + (f"; label skew {stats['label_skew']} (mean total-variation distance to the pooled labels)" if "label_skew" in stats else ""),
        highlight=False,
    )
    for split, ids in empty_splits(fed).items():
        if ids:
            shown = ", ".join(map(str, ids[:10])) + (f", ... ({len(ids)} in all)" if len(ids) > 10 else "")
            err_console.print(f"warning: {len(ids)} of {fed.num_clients} clients have an empty {split} split: {shown}; "
                              f"raise data.{split}_fraction or use fewer clients", highlight=False, markup=False, soft_wrap=True)
    alpha_text = f", α {alpha:g}" if partition == "dirichlet" else ""
    path = plot_label_distribution(fed, out / f"{name}_{partition_label(partition, alpha, fed.num_clients, seed)}_labels.png",
                                   title=f"{partition} partition{alpha_text}")
    console.print(f"plot: {path}")


def main() -> None:  # pragma: no cover
    sys.exit(app())

"""``fedtune bench``: measurement commands (mounted by ``fedtune.cli``)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fedtune.measure.memory import METHODS, measure_memory, ratios

bench_app = typer.Typer(help="Measure memory and cost of client steps.", no_args_is_help=True)


@bench_app.callback()
def bench() -> None:
    """Measure memory and cost of client steps."""


def _mb(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:,.1f}"


@bench_app.command("memory")
def memory(
    model: Annotated[str, typer.Option(help="minilm, smollm2, a Hugging Face id or a local folder")] = "minilm",
    methods: Annotated[str, typer.Option(help=f"comma-separated, from {','.join(METHODS)}")] = ",".join(METHODS),
    batch: Annotated[int, typer.Option(min=1, help="client batch size")] = 16,
    seq: Annotated[int, typer.Option(min=1, help="sequence length")] = 128,
    task: Annotated[str | None, typer.Option(help="classification or causal_lm (default: causal_lm for smollm2)")] = None,
    num_classes: Annotated[int, typer.Option(min=2, help="classes of the classification head")] = 2,
    peft: Annotated[str, typer.Option(help="lora, ia3 or bitfit")] = "lora",
    r: Annotated[int, typer.Option(min=1, help="LoRA rank")] = 8,
    clients: Annotated[int, typer.Option(min=1, help="Spry: clients sharing the layer groups (one client's share is measured)")] = 10,
    num_tangents: Annotated[int, typer.Option(min=1, help="forward-gradient tangents per step (K)")] = 1,
    loss_chunk_size: Annotated[int, typer.Option(min=0, help="causal LMs, forward methods: sequence positions per loss chunk (0: whole sequence)")] = 16,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """One client step per method, each in a fresh subprocess: peak tensor bytes above the
    loaded model (with a breakdown) and the process peak RSS."""
    chosen = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in METHODS]
    if unknown:
        raise typer.BadParameter(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    results = measure_memory(
        model, chosen, batch=batch, seq=seq, task=task, num_classes=num_classes,
        model_options={"peft": peft, "r": r}, clients=clients, num_tangents=num_tangents,
        loss_chunk_size=loss_chunk_size or None,
    )
    summary = {"model": model, "batch": batch, "seq": seq, "results": results, "ratios": ratios(results)}
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    print_memory(summary, Console(width=160) if not Console().is_terminal else Console())


def print_memory(summary: dict, console: Console) -> None:
    """The measured steps as a table and the ratios as a second one. Piped output gets a
    console wide enough for every column (rich's default of 80 would cut them)."""
    results = summary["results"]
    table = Table(title=f"one client step: {summary['model']}, batch {summary['batch']}, seq {summary['seq']} (MiB)")
    for col in ("method", "peak above model", "activations", "gradients", "tangents", "optimizer", "peak RSS", "RSS above load"):
        table.add_column(col, justify="left" if col == "method" else "right", no_wrap=True)
    for res in results:
        b = res["breakdown"]
        table.add_row(res["method"], _mb(res["peak_above_model"]), _mb(b.get("activations")), _mb(b.get("gradients")),
                      _mb(b.get("tangents")), _mb(b.get("optimizer_state")), _mb(res["rss_peak"]), _mb(res["rss_peak_above_load"]))
    console.print(table)
    console.print(f"weights: {_mb(results[0]['weights'])} MiB")
    ratio_rows: dict[str, dict[str, float]] = {}
    for key, value in summary["ratios"].items():
        method, ref = key.split("/")
        ratio_rows.setdefault(method, {})[ref] = value
    if ratio_rows:
        refs = sorted({ref for row in ratio_rows.values() for ref in row})
        ratio_table = Table(title="peak above model, as a multiple of")
        ratio_table.add_column("method", no_wrap=True)
        for ref in refs:
            ratio_table.add_column(ref, justify="right", no_wrap=True)
        for method, row in ratio_rows.items():
            ratio_table.add_row(method, *(f"{row[ref]:.3f}" if ref in row else "-" for ref in refs))
        console.print(ratio_table)

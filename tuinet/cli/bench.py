"""`tuinet bench`: training throughput, side by side with PyTorch when it is installed."""

from __future__ import annotations


import click

from tuinet.cli.common import CONTEXT, check_thread_env, friendly_errors


@click.command("bench", context_settings=CONTEXT)
@click.option("--model", "-m", default="mlp", show_default=True, help="Preset or spec to time.")
@click.option("--dataset", "-d", default="mnist", show_default=True, help="Dataset giving the input shape.")
@click.option("--optimizer", "-o", default="adam", show_default=True, help="Optimizer.")
@click.option("--batch-size", "-b", type=click.IntRange(1, 65536), default=64, show_default=True, help="Batch size.")
@click.option("--steps", "-n", type=click.IntRange(1, 1_000_000), default=None,
              help="Timed training steps per round.  [default: about 2 s of tuinet's training, 5 to 300 steps]")
@click.option("--rounds", type=click.IntRange(1, 1000), default=5, show_default=True,
              help="Interleaved rounds (tuinet, PyTorch, tuinet, ...).")
@click.option("--torch/--no-torch", "use_torch", default=True, show_default=True,
              help="Also time PyTorch when it is installed.")
@click.option("--peak/--no-peak", default=True, show_default=True,
              help="First measure the machine's peak (FMA loop, sgemm) and report GFLOP/s as a share of it.")
@click.option("--gemm/--no-gemm", default=True, show_default=True,
              help="Also time the model's matrix products alone each round (the GEMM-only ceiling at its shapes).")
@click.option("--json", "json_out", is_flag=True, help="Print one JSON object.")
@friendly_errors
def bench(model: str, dataset: str, optimizer: str, batch_size: int, steps: int | None, rounds: int, use_torch: bool,
          peak: bool, gemm: bool, json_out: bool) -> None:
    """Time training steps (samples/s), side by side with PyTorch when installed."""
    from tuinet.bench.throughput import run_bench

    check_thread_env()
    run_bench(model=model, dataset=dataset, optimizer=optimizer, batch_size=batch_size, steps=steps,
              rounds=rounds, use_torch=use_torch, json_out=json_out, machine=None if peak else False,
              gemm=gemm)

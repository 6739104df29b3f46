"""The job, first half: train a model (or import one), flatten it, evaluate it."""

from __future__ import annotations

import sys

import click

from liteconv.cli.common import (
    config_option,
    load_config_from,
    progress_bar,
    run_dir_or_newest,
    set_option,
)
from liteconv.cli.root import cli
from liteconv.device import caches
from liteconv.device.errors import LiteconvError


@cli.command()
@config_option
@set_option
@click.option("--out", default="runs", show_default=True, help="parent folder of the runs")
@click.option("--resume", type=click.Path(file_okay=False), help="continue an interrupted run")
@click.option("--run-name", help="run folder name (default: timestamp)")
def train(config_path, sets, out, resume, run_name):
    """Train a model from CONFIG into runs/<experiment>/<time>/."""
    from liteconv.pipeline.train import train as train_fn

    if resume and (config_path or sets):
        raise LiteconvError("--resume continues a run with its own config; drop -c/--set")
    cfg = None if resume else load_config_from(config_path, sets)
    try:
        run = train_fn(cfg, out=out, resume=resume, run_name=run_name, echo=click.echo)
    except KeyboardInterrupt:
        raise LiteconvError(
            "interrupted; the run resumes from its last finished epoch when you run the "
            "same command again (or liteconv train --resume RUN_DIR)"
        ) from None
    click.echo(f"run folder: {run.path}")


@cli.command("import")
@click.argument("model_path", type=click.Path(dir_okay=False))
@config_option
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="config override, e.g. data.image_size=[32,32] (what the model was trained on)",
)
@click.option("--name", help="experiment name of the run (default: the config's)")
@click.option("--out", default="runs", show_default=True, help="parent folder of the runs")
@click.option("--custom-objects", "custom_objects", multiple=True, metavar="MODULE:NAME",
              help="a custom layer the model needs, e.g. mylayers:Mish (repeatable)")  # fmt: skip
def import_cmd(model_path, config_path, sets, name, out, custom_objects):
    """Make a run folder from a Keras model trained elsewhere (MODEL_PATH.keras + CONFIG's data)."""
    from liteconv.pipeline.import_run import import_model

    cfg = load_config_from(config_path, sets, check_model=False)
    import_model(model_path, cfg, name=name, out=out, custom_objects=custom_objects,
                 echo=click.echo)  # fmt: skip


@cli.command()
@click.argument("run_dir", type=click.Path(), required=False)
@click.option("--model", "model_path", type=click.Path(dir_okay=False),
              help="a .keras file instead of a run (needs -c CONFIG for its data)")  # fmt: skip
@config_option
@set_option
@click.option("--method", type=click.Choice(["lvh", "cp"]), default="lvh", show_default=True,
              help="lvh: rank 1 per output filter (flattened); cp: rank-R CP of the kernel")  # fmt: skip
@click.option("--stages", type=click.IntRange(1, 2), default=1, show_default=True,
              help="LVH stages; the second starts as the identity")  # fmt: skip
@click.option("--rank", type=click.IntRange(1), help="CP rank R")
@click.option("--rank-ratio", type=click.FloatRange(0, 4, min_open=True),
              help="CP rank as a fraction of each layer's output channels  [default: 0.5]")  # fmt: skip
@click.option("--layers", help="comma list of Conv2D names (default: every eligible one)")
@click.option("--min-macs", type=click.IntRange(0), default=0, help="skip smaller convolutions")
@click.option("--epochs", type=click.IntRange(0), default=3, show_default=True,
              help="fine-tune epochs (0: decompose only)")  # fmt: skip
@click.option("--learning-rate", type=click.FloatRange(0, min_open=True),
              help="fine-tune learning rate  [default: the parent's / 100 after a data-aware cp "
                   "fit of 1,000+ fine-tune steps, else / 10; / 4 for a kernel-fit lvh; "
                   "cosine decay]")  # fmt: skip
@click.option(
    "--distill/--no-distill",
    default=True,
    show_default=True,
    help="fine-tune also on the parent's softened outputs (knowledge distillation)",
)
@click.option(
    "--temperature",
    type=click.FloatRange(0, min_open=True),
    default=4.0,
    show_default=True,
    help="with --distill: softmax temperature of both models",
)
@click.option(
    "--distill-weight",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="with --distill: weight of the teacher term (the rest on the labels)",
)
@click.option(
    "--data-aware/--no-data-aware",
    default=True,
    show_default=True,
    help="refit each decomposed layer to the parent layer's outputs on training images "
    "(layer after layer, correcting the error from below), not only to its kernel",
)
@click.option(
    "--fit-images",
    type=click.IntRange(2),
    default=2048,
    show_default=True,
    help="with --data-aware: training images whose activations the factors are fitted on",
)
@click.option(
    "--warmup-epochs",
    type=click.IntRange(0),
    default=None,
    help="fine-tune epochs of linear learning-rate warm-up before the cosine decay  "
    "[default: 1 after a data-aware cp fit of 1,000+ fine-tune steps, else 0]",
)
@click.option("--no-bn-reestimate", is_flag=True,
              help="keep the BatchNorm statistics of the parent (a data-aware fit keeps them: "
                   "re-estimated ones are only measured)")  # fmt: skip
@click.option("--name", help="experiment name of the new run (default: <parent>_<method>)")
@click.option("--out", default="runs", show_default=True, help="parent folder of the runs")
@click.option(
    "--budget-ms",
    type=click.FloatRange(0, min_open=True),
    help="choose keep/lvh1/lvh2/cp:R per layer so the predicted latency meets this",
)
@click.option(
    "--mode",
    "budget_mode",
    type=click.Choice(["int8", "fp32"]),
    default="int8",
    show_default=True,
    help="with --budget-ms: the deployed precision",
)
@click.option("--target", default=None, help="with --budget-ms: a target whose cores are pinned")
@click.option(
    "--threads",
    default=1,
    show_default=True,
    type=click.IntRange(1),
    help="with --budget-ms: interpreter threads",
)
@click.option("--cache", default=str(caches.LATENCY), show_default=True,
              help="with --budget-ms: the latency table")  # fmt: skip
@click.option("--emulate", is_flag=True,
              help="with --budget-ms --target T: plan on T's emulated core (estimated "
                   "latencies, 1 thread) instead of this CPU's")  # fmt: skip
@click.option("--result", "result_path", default=None, type=click.Path(),
              help="with --budget-ms: also write RESULT.json and RESULT.md (plan, predicted "
                   "and measured latency, accuracy)")  # fmt: skip
def flatten(run_dir, model_path, config_path, sets, method, stages, rank, rank_ratio, layers,
            min_macs, epochs, learning_rate, no_bn_reestimate, name, out, budget_ms,
            budget_mode, target, threads, cache, emulate, result_path, distill, temperature,
            distill_weight, data_aware, fit_images, warmup_epochs):  # fmt: skip
    """Decompose RUN_DIR's trained convolutions (flattened LVH or CP), fine-tune, new run.
    With --budget-ms the method is chosen per layer to meet a latency on this CPU."""
    from liteconv.bench.flatten_run import flatten_run

    if (run_dir is None) == (model_path is None):
        raise LiteconvError("give a RUN_DIR or --model MODEL.keras -c CONFIG (one of them)")
    budget = None
    if budget_ms is not None:
        if layers or rank or rank_ratio or method != "lvh" or stages != 1 or min_macs:
            raise LiteconvError(
                "--budget-ms chooses the method per layer: drop --method, "
                "--stages, --rank, --rank-ratio, --layers and --min-macs"
            )
        from liteconv.bench.budget import Budget
        from liteconv.device.targets import load_target

        budget = Budget(budget_ms, mode=budget_mode, threads=threads, emulate=emulate,
                        target=load_target(target) if target else None, cache=cache or None)  # fmt: skip
    if emulate and budget_ms is None:
        raise LiteconvError("--emulate is for --budget-ms (a plan on the board's latencies)")
    if result_path and budget_ms is None:
        raise LiteconvError("--result writes a budget run's result: give --budget-ms too")
    if rank and rank_ratio:
        raise LiteconvError("give --rank or --rank-ratio, not both")
    if (rank or rank_ratio) and method != "cp":
        raise LiteconvError("--rank/--rank-ratio are for --method cp")
    cfg = load_config_from(config_path, sets, check_model=False) if config_path else None
    names = [n.strip() for n in layers.split(",") if n.strip()] if layers else None
    state: dict = {}

    def progress(done: int, total: int, layer: str, error: float, fitted=None) -> None:
        label = "decomposing" if fitted is None else "fitting to outputs"
        if "bar" not in state:  # one bar per phase, closed by its last layer
            state["bar"] = progress_bar(label)
        prefix = "\n" if sys.stderr.isatty() else ""  # below the bar's line on a terminal
        what = (f"relative reconstruction error {error:.4f}" if fitted is None else
                f"relative output error {error:.4f} (kernel fit) -> {fitted:.4f} (data fit)")  # fmt: skip
        click.echo(f"{prefix}  [{done}/{total}] {layer}: {what}", err=True)
        state["bar"](done, total)
        if done == total:
            state.pop("bar")

    run = flatten_run(
        run_dir, model_path=model_path, cfg=cfg, method=method, stages=stages, rank=rank,
        rank_ratio=rank_ratio, layers=names, min_macs=min_macs, epochs=epochs,
        learning_rate=learning_rate, out=out, name=name,
        bn_reestimate=not no_bn_reestimate, budget=budget, distill=distill,
        temperature=temperature, distill_alpha=distill_weight, warmup_epochs=warmup_epochs,
        data_aware=data_aware, fit_images=fit_images, progress=progress, echo=click.echo,
    )  # fmt: skip
    click.echo(f"run folder: {run.path}")
    if result_path:
        from liteconv.bench.budget import write_budget_result

        for path in write_budget_result(run, result_path):
            click.echo(f"wrote {path}")


@cli.command()
@click.argument("run_dir", type=click.Path(), required=False)
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def evaluate(run_dir, as_json):
    """Test accuracy, loss and per-class accuracy of the model in RUN_DIR (default: newest)."""
    import json

    from liteconv.device.tables import format_table
    from liteconv.pipeline.evaluate import evaluate_run

    result = evaluate_run(run_dir_or_newest(run_dir))
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(
        f"{result['run']}: test accuracy {result['accuracy']:.4f}, loss {result['loss']:.4f} "
        f"({result['samples']} images)"
    )
    rows = [[name, acc] for name, acc in result["per_class_accuracy"].items()]
    click.echo(format_table(["class", "accuracy"], rows))

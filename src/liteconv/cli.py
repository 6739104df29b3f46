"""The ``liteconv`` command line: a thin click group; each command calls one function.

Heavy modules (TensorFlow) are imported inside the commands that need them, so the
benchmark commands run where only numpy and the LiteRT runtime are installed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
import yaml

from liteconv.device.__main__ import int_list  # no TensorFlow: the device CLI's parser
from liteconv.device.errors import LiteconvError


def parse_overrides(pairs: tuple[str, ...]) -> dict[str, object]:
    """Parse ``key=value`` pairs; values are read as YAML scalars (``1``, ``0.5``, ``true``)."""
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise LiteconvError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set train.epochs=1")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise LiteconvError(f"--set {pair!r}: value is not valid YAML ({err})") from err
    return out


def _shape(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError as err:
        raise LiteconvError(f"--input-shape {text!r}: expected H,W,C such as 32,32,3") from err


class UserError(click.ClickException):
    """A ``LiteconvError`` as click shows it: ``Error: <one line>``, exit status 2."""

    exit_code = 2


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except LiteconvError as err:
            raise UserError(str(err)) from err
        except (click.exceptions.Exit, click.ClickException, click.Abort, KeyboardInterrupt):
            raise
        except Exception as err:  # last resort: one line, the traceback only on request
            if _debug():
                raise
            first = (str(err).strip().splitlines() or [""])[0][:300]
            raise InternalError(
                f"unexpected {type(err).__name__}: {first} (LITECONV_DEBUG=1 or "
                "'liteconv --debug ...' shows the traceback; please report it)"
            ) from err


def _debug() -> bool:
    return os.environ.get("LITECONV_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


class InternalError(click.ClickException):
    """Something liteconv did not expect: one line, exit status 1."""

    exit_code = 1


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="liteconv")
@click.option("-v", "--verbose", is_flag=True,
              help="show TensorFlow's and LiteRT's own log lines (also LITECONV_VERBOSE=1)")  # fmt: skip
@click.option("--debug", is_flag=True, help="show the traceback of an unexpected error")
@click.option("--no-verify-hashes", is_flag=True,
              help="use run files whose SHA-256 differs from the manifest (edited on purpose)")  # fmt: skip
def cli(verbose: bool, debug: bool, no_verify_hashes: bool) -> None:
    """liteconv: flattened and separable convolutions, from Keras to measured TFLite."""
    if verbose:
        os.environ["LITECONV_VERBOSE"] = "1"  # read when TensorFlow is first imported
    if debug:
        os.environ["LITECONV_DEBUG"] = "1"
    if no_verify_hashes:
        os.environ["LITECONV_NO_VERIFY_HASHES"] = "1"


@cli.command()
@click.argument("model")
@click.option("--input-shape", default="32,32,3", show_default=True, help="H,W,C")
@click.option("--num-classes", default=10, show_default=True, type=int)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="model argument")
@click.option("--markdown", is_flag=True, help="print a Markdown table")
def summary(model: str, input_shape: str, num_classes: int, sets: tuple[str, ...], markdown: bool):
    """Per-layer parameters and multiply-accumulates of a registered MODEL."""
    from liteconv.keras_layers import create_model, model_cost

    kwargs = parse_overrides(sets)
    try:
        built = create_model(
            model, input_shape=_shape(input_shape), num_classes=num_classes, **kwargs
        )
    except ValueError as err:
        raise LiteconvError(str(err)) from err
    cost = model_cost(built)
    click.echo(f"{built.name}: {cost.total_params:,} parameters, {cost.total_macs:,} MACs")
    click.echo(cost.table(markdown=markdown))


@cli.command("models")
def models_cmd() -> None:
    """List the registered models and their arguments."""
    from liteconv.keras_layers import list_models, model_kwargs

    for name in list_models():
        args = ", ".join(f"{k}={v!r}" for k, v in model_kwargs(name).items())
        click.echo(f"{name}({args})")


_config_option = click.option(
    "-c", "--config", "config_path", type=click.Path(dir_okay=False), metavar="CONFIG",
    help="experiment YAML, e.g. configs/experiments/fashion_mnist_flattened.yaml",
)  # fmt: skip
_set_option = click.option(
    "--set", "sets", multiple=True, metavar="KEY=VALUE", help="override, e.g. train.epochs=1"
)


def _load(config_path: str | None, sets: tuple[str, ...], *, check_model: bool = True):
    from liteconv.config import load_config

    if config_path is None:
        raise LiteconvError("missing -c CONFIG, e.g. -c configs/experiments/digits_quick.yaml")
    return load_config(config_path, parse_overrides(sets), check_model=check_model)


@cli.command()
@_config_option
@_set_option
@click.option("--out", default="runs", show_default=True, help="parent folder of the runs")
@click.option("--resume", type=click.Path(file_okay=False), help="continue an interrupted run")
@click.option("--run-name", help="run folder name (default: timestamp)")
def train(config_path, sets, out, resume, run_name):
    """Train a model from CONFIG into runs/<experiment>/<time>/."""
    from liteconv.pipeline.train import train as train_fn

    if resume and (config_path or sets):
        raise LiteconvError("--resume continues a run with its own config; drop -c/--set")
    cfg = None if resume else _load(config_path, sets)
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
@_config_option
@_set_option
@click.option("--name", help="experiment name of the run (default: the config's)")
@click.option("--out", default="runs", show_default=True, help="parent folder of the runs")
@click.option("--custom-objects", "custom_objects", multiple=True, metavar="MODULE:NAME",
              help="a custom layer the model needs, e.g. mylayers:Mish (repeatable)")  # fmt: skip
def import_cmd(model_path, config_path, sets, name, out, custom_objects):
    """Make a run folder from a Keras model trained elsewhere (MODEL_PATH.keras + CONFIG's data)."""
    from liteconv.pipeline.import_run import import_model

    cfg = _load(config_path, sets, check_model=False)
    import_model(model_path, cfg, name=name, out=out, custom_objects=custom_objects,
                 echo=click.echo)  # fmt: skip


@cli.command()
@click.argument("run_dir", type=click.Path(), required=False)
@click.option("--model", "model_path", type=click.Path(dir_okay=False),
              help="a .keras file instead of a run (needs -c CONFIG for its data)")  # fmt: skip
@_config_option
@_set_option
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
              help="fine-tune learning rate  [default: the parent's / 4, cosine decay]")  # fmt: skip
@click.option("--no-bn-reestimate", is_flag=True,
              help="keep the BatchNorm statistics of the parent")  # fmt: skip
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
@click.option("--cache", default=".cache/latency", show_default=True,
              help="with --budget-ms: the latency table")  # fmt: skip
@click.option("--result", "result_path", default=None, type=click.Path(),
              help="with --budget-ms: also write RESULT.json and RESULT.md (plan, predicted "
                   "and measured latency, accuracy)")  # fmt: skip
def flatten(run_dir, model_path, config_path, sets, method, stages, rank, rank_ratio, layers,
            min_macs, epochs, learning_rate, no_bn_reestimate, name, out, budget_ms,
            budget_mode, target, threads, cache, result_path):  # fmt: skip
    """Decompose RUN_DIR's trained convolutions (flattened LVH or CP), fine-tune, new run.
    With --budget-ms the method is chosen per layer to meet a latency on this CPU."""
    from liteconv.pipeline.flatten_run import flatten_run

    if (run_dir is None) == (model_path is None):
        raise LiteconvError("give a RUN_DIR or --model MODEL.keras -c CONFIG (one of them)")
    budget = None
    if budget_ms is not None:
        if layers or rank or rank_ratio or method != "lvh" or stages != 1 or min_macs:
            raise LiteconvError(
                "--budget-ms chooses the method per layer: drop --method, "
                "--stages, --rank, --rank-ratio, --layers and --min-macs"
            )
        from liteconv.device.targets import load_target

        spec = load_target(target) if target else None
        budget = {
            "ms": budget_ms,
            "mode": budget_mode,
            "threads": threads,
            "cores": spec.cores if spec else None,
            "target": spec.name if spec else "host",
            "cache": cache or None,
        }
    if result_path and budget_ms is None:
        raise LiteconvError("--result writes a budget run's result: give --budget-ms too")
    if rank and rank_ratio:
        raise LiteconvError("give --rank or --rank-ratio, not both")
    if (rank or rank_ratio) and method != "cp":
        raise LiteconvError("--rank/--rank-ratio are for --method cp")
    cfg = _load(config_path, sets, check_model=False) if config_path else None
    names = [n.strip() for n in layers.split(",") if n.strip()] if layers else None
    state: dict = {}

    def progress(done: int, total: int, layer: str, error: float) -> None:
        if "bar" not in state:
            state["bar"] = click.progressbar(length=total, label="decomposing", file=sys.stderr)
            state["bar"].__enter__()
        prefix = "\n" if sys.stderr.isatty() else ""  # below the bar's line on a terminal
        click.echo(f"{prefix}  [{done}/{total}] {layer}: relative reconstruction error "
                   f"{error:.4f}", err=True)  # fmt: skip
        state["bar"].update(1)
        if done == total:
            state.pop("bar").__exit__(None, None, None)

    run = flatten_run(
        run_dir, model_path=model_path, cfg=cfg, method=method, stages=stages, rank=rank,
        rank_ratio=rank_ratio, layers=names, min_macs=min_macs, epochs=epochs,
        learning_rate=learning_rate, out=out, name=name,
        bn_reestimate=not no_bn_reestimate, budget=budget, progress=progress, echo=click.echo,
    )  # fmt: skip
    click.echo(f"run folder: {run.path}")
    if result_path:
        from liteconv.bench.budget import write_budget_result

        for path in write_budget_result(run, result_path):
            click.echo(f"wrote {path}")


@cli.command()
@_config_option
@_set_option
def config(config_path, sets):
    """Print the resolved CONFIG (base files and overrides applied)."""
    from liteconv.config import dump_config

    click.echo(dump_config(_load(config_path, sets)), nl=False)


def _run_dir(run_dir: str | None) -> str:
    """RUN_DIR, or the newest finished run under runs/."""
    from liteconv.pipeline.run import Run

    return run_dir or str(Run.newest("runs").path)


@cli.command()
@click.argument("run_dir", type=click.Path(), required=False)
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def evaluate(run_dir, as_json):
    """Test accuracy, loss and per-class accuracy of the model in RUN_DIR (default: newest)."""
    import json

    from liteconv.device.tables import format_table
    from liteconv.pipeline.evaluate import evaluate_run

    result = evaluate_run(_run_dir(run_dir))
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(
        f"{result['run']}: test accuracy {result['accuracy']:.4f}, loss {result['loss']:.4f} "
        f"({result['samples']} images)"
    )
    rows = [[name, acc] for name, acc in result["per_class_accuracy"].items()]
    click.echo(format_table(["class", "accuracy"], rows))


@cli.command("bench-train")
@click.option("--models", default="baseline_cnn,flattened_cnn,separable_cnn", show_default=True)
@click.option("--input-shape", default="28,28,1", show_default=True, help="H,W,C")
@click.option("--batch-size", default=128, show_default=True, type=click.IntRange(1))
@click.option("--steps", default=20, show_default=True, type=click.IntRange(1))
@click.option("--rounds", default=5, show_default=True, type=click.IntRange(1))
@click.option("--out", default="docs/results/bench_train", show_default=True,
              help="writes OUT.json and OUT.md")  # fmt: skip
def bench_train(models, input_shape, batch_size, steps, rounds, out):
    """Training throughput (images/s) of several models, measured side by side."""
    from liteconv.bench.training import training_throughput
    from liteconv.device.machine import machine_info
    from liteconv.device.tables import format_table
    from liteconv.pipeline.run import atomic_write_json, atomic_write_text

    names = [m.strip() for m in models.split(",") if m.strip()]
    records = training_throughput(
        names, input_shape=_shape(input_shape), batch_size=batch_size, steps=steps,
        rounds=rounds, echo=click.echo,
    )  # fmt: skip
    machine = machine_info()
    ratio = f"speed_vs_{names[0]}"
    table = format_table(
        ["model", "params", "MACs", "images/s (median)", "CV", f"× {names[0]}"],
        [[r["model"], r["params"], r["macs"], r["images_per_second_median"], r["cv"], r[ratio]]
         for r in records],
        markdown=True,
    )  # fmt: skip
    header = (
        f"Training throughput, batch {batch_size}, input {input_shape}, median step time over {rounds} "
        f"interleaved rounds of {steps} steps; {machine['cpu']}, {machine['cores_usable']} cores."
    )
    atomic_write_json(f"{out}.json", {"machine": machine, "records": records})
    atomic_write_text(f"{out}.md", f"{header}\n\n{table}\n")
    click.echo(table)
    click.echo(f"wrote {out}.json and {out}.md")


@cli.command()
@click.argument("run_dir", type=click.Path(), required=False)
@click.option("--mode", "modes", help="comma list of fp32,fp16,dynamic,int8,int16x8,qat_int8 "
              "(default: the run config's export.modes)")  # fmt: skip
@click.option("--qat-epochs", type=click.IntRange(0), help="QAT fine-tune epochs")
@click.option("--prune", "sparsity", type=float, help="prune to this sparsity first, e.g. 0.5")
@click.option("--prune-epochs", type=click.IntRange(1), help="pruning fine-tune epochs")
@click.option("--io", "io_type", type=click.Choice(["float32", "int8", "uint8"]),
              help="input/output dtype of the int8 models")  # fmt: skip
@click.option("--per-tensor", is_flag=True, default=None,
              help="one weight scale per tensor (smaller files for depthwise-heavy models)")  # fmt: skip
@click.option("--calibration", type=click.IntRange(1), help="representative samples for PTQ")
@click.option("--no-verify", is_flag=True, help="skip the Keras-vs-TFLite check")
def export(
    run_dir, modes, qat_epochs, sparsity, prune_epochs, io_type, per_tensor, calibration, no_verify
):
    """Convert RUN_DIR's model to .tflite files in RUN_DIR/export/ and verify them."""
    from liteconv.export.run_export import export_run

    export_run(
        _run_dir(run_dir),
        modes=[m.strip() for m in modes.split(",")] if modes else None,
        qat_epochs=qat_epochs,
        prune_sparsity=sparsity,
        prune_epochs=prune_epochs,
        io_type=io_type,
        per_channel=False if per_tensor else None,
        calibration_samples=calibration,
        verify=not no_verify,
        echo=click.echo,
    )


@cli.command()
@click.argument("run_dir", type=click.Path(), required=False)
def verify(run_dir):
    """Check every RUN_DIR/export/*.tflite against the Keras model on the test split."""
    from liteconv.export.run_export import verify_run

    verify_run(_run_dir(run_dir), echo=click.echo)


def _bench_config(models: tuple[str, ...], config_path: str | None, overrides: dict):
    """The config whose ``bench:`` section applies: -c CONFIG, else the models' run, else
    the defaults; ``overrides`` (the flags) are checked with it, in one place."""
    from liteconv.config import config_from_dict, load_config

    if config_path:
        return load_config(config_path, overrides, check_model=False)
    run_config = Path(models[0]).resolve().parent.parent / "config.yaml"
    data = {}
    if len(models) and run_config.is_file():
        from liteconv.pipeline.run import Run

        data = Run(run_config.parent).config().to_dict()
    source = str(run_config) if data else "liteconv bench"
    for key, value in overrides.items():
        data.setdefault("bench", {})[key.split(".", 1)[1]] = value
    return config_from_dict(data, source)


@cli.command()
@click.argument("models", nargs=-1, required=True, type=click.Path())
@click.option("--threads", help="comma list (default: bench.threads, else the target's, else 1)")
@click.option("--warmup", type=int, help="untimed runs per case  [default: bench.warmup, 10]")
@click.option("--runs", type=int, help="timed runs per case  [default: bench.runs, 100]")
@click.option("--runtime", type=click.Choice(["auto", "litert", "tflite_runtime", "tf"]))
@click.option("--no-xnnpack", is_flag=True, help="builtin kernels instead of XNNPACK")
@click.option("--target", help="a configs/targets name (threads, cores to pin, runtime)")
@_config_option
@click.option("--json", "json_path", type=click.Path(), help="write the records as JSON")
@click.option("--markdown", "md_path", type=click.Path(), help="write the Markdown table")
@click.option("--crosscheck", is_flag=True,
              help="also time each model with the litert-benchmark tool of ai-edge-litert")  # fmt: skip
def bench(models, threads, warmup, runs, runtime, no_xnnpack, target, config_path, json_path,
          md_path, crosscheck):  # fmt: skip
    """Latency, throughput and memory of .tflite MODELS (interleaved; no TensorFlow).

    Defaults come from the bench: section of -c CONFIG, or of the run the models belong to.
    """
    from liteconv.device import harness
    from liteconv.device.files import atomic_write_text

    flags = {"bench.threads": int_list(threads, "--threads") if threads else None,
             "bench.warmup": warmup, "bench.runs": runs, "bench.runtime": runtime,
             "bench.xnnpack": False if no_xnnpack else None, "bench.target": target}  # fmt: skip
    cfg = _bench_config(models, config_path, {k: v for k, v in flags.items() if v is not None})
    opts = cfg.bench.resolve()
    total = opts["runs"] * len(models) * len(opts["threads"]) * len(opts["xnnpack"])
    with click.progressbar(length=total, label="benchmarking", file=sys.stderr) as bar:
        state = {"done": 0}

        def progress(done, _total):
            bar.update(done - state["done"])
            state["done"] = done

        records = harness.benchmark(
            list(models), threads=opts["threads"], warmup=opts["warmup"], runs=opts["runs"],
            runtime=opts["runtime"], xnnpack=opts["xnnpack"], cores=opts["cores"],
            progress=progress,
        )  # fmt: skip
    if crosscheck:
        _crosscheck(records, opts["runs"], opts["warmup"])
    table = harness.markdown(records)
    click.echo(table)
    for line in harness.delegation_warnings(records):
        click.echo(line, err=True)
    if json_path:
        target = opts["target"].to_dict() if opts["target"] else None
        harness.write_json(json_path, harness.result_document(records, target=target))
        click.echo(f"wrote {json_path}")
    if md_path:
        atomic_write_text(md_path, table + "\n")


def _crosscheck(records: list[dict], runs: int, warmup: int) -> None:
    """Time each XNNPACK record again with litert-benchmark and print the ratios."""
    from liteconv.bench.crosscheck import litert_benchmark

    for r in records:
        if r["xnnpack"]:
            ref = litert_benchmark(r["file"], threads=r["threads"], runs=runs, warmup=warmup)
            r["litert_benchmark_median_ms"] = ref
            r["ratio_to_litert_benchmark"] = round(r["p50_ms"] / ref, 3)
            click.echo(f"{r['model']} threads={r['threads']}: p50 {r['p50_ms']:.4f} ms, "
                       f"litert-benchmark median {ref:.4f} ms, "
                       f"ratio {r['ratio_to_litert_benchmark']:.3f}")  # fmt: skip


@cli.command()
@click.argument("run_dir", type=click.Path(), required=False)
@click.option("-o", "--out", default="dist", show_default=True, help="output folder")
@click.option("--target", default="raspberry-pi-4", show_default=True)
@click.option("--samples", default=16, show_default=True, type=click.IntRange(1),
              help="reference test images for 'bench.py --check'")  # fmt: skip
@click.option("--profile", is_flag=True,
              help="also carry every block of the model, for 'bench.py --profile'")  # fmt: skip
@click.option("--profile-mode", "profile_modes", default="fp32,int8", show_default=True,
              help="comma list of fp32, int8: the modes of the block models")  # fmt: skip
def bundle(run_dir, out, target, samples, profile, profile_modes):
    """Pack RUN_DIR's .tflite models into a device bundle (.tar.gz, no TensorFlow needed)."""
    from liteconv.deploy.bundle import make_bundle

    modes = [m.strip() for m in profile_modes.split(",") if m.strip()]
    path = make_bundle(_run_dir(run_dir), out=out, target=target, samples=samples,
                       profile=profile, profile_modes=modes, echo=click.echo)  # fmt: skip
    click.echo(f"wrote {path}")


@cli.command()
@click.option("--sizes", default="16,32,48,64,80", show_default=True, help="input sizes N")
@click.option("--channels", default="64,128", show_default=True, help="C in = C out")
@click.option("--threads", default="1,2", show_default=True)
@click.option("--runs", default=50, show_default=True, type=click.IntRange(1))
@click.option("--no-models", is_flag=True, help="skip the whole-model comparison")
@click.option("--out", default="docs/results/bench_layers", show_default=True,
              help="writes OUT.csv/.json/.md and OUT_latency.png, OUT_speedup.png")  # fmt: skip
def compare(sizes, channels, threads, runs, no_models, out):
    """Standard vs flattened vs separable convolution latency (the papers' speed tables)."""
    from liteconv.bench.layers import compare_layers, compare_models
    from liteconv.bench.report import write_compare
    from liteconv.device.machine import machine_info

    thread_list = int_list(threads, "--threads")
    rows = compare_layers(
        sizes=int_list(sizes, "--sizes"), channels=int_list(channels, "--channels"),
        threads=thread_list, runs=runs, echo=click.echo,
    )  # fmt: skip
    if not no_models:
        rows += compare_models(threads=thread_list, runs=runs, echo=click.echo)
    for path in write_compare(rows, out, machine=machine_info()):
        click.echo(f"wrote {path}")


@cli.command("bench-flatten")
@click.argument("parent_dir", type=click.Path())
@click.option("--variants", default="lvh1,lvh2,cp0.5,cp0.25", show_default=True,
              help="comma list: lvh1, lvh2, cpF (rank ratio) or cpR (rank)")  # fmt: skip
@click.option("--epochs", default=3, show_default=True, type=click.IntRange(1))
@click.option("--no-scratch", is_flag=True, help="skip the from-scratch comparison")
@click.option("--runs", default=200, show_default=True, type=click.IntRange(1),
              help="timed runs per model in the latency benchmark")  # fmt: skip
@click.option("--runs-dir", default="runs", show_default=True, help="where the new runs go")
@click.option("--out", default="docs/results/flatten", show_default=True,
              help="writes OUT.json and OUT.md")  # fmt: skip
def bench_flatten(parent_dir, variants, epochs, no_scratch, runs, runs_dir, out):
    """Decompose-then-fine-tune variants of PARENT_DIR against training from scratch."""
    from liteconv.bench.flatten_study import flatten_study, study_table, write_study

    names = [v.strip() for v in variants.split(",") if v.strip()]
    rows = flatten_study(parent_dir, names, epochs=epochs, scratch=not no_scratch,
                         out_runs=runs_dir, runs=runs, echo=click.echo)  # fmt: skip
    for path in write_study(rows, out, epochs=epochs, parent=str(parent_dir)):
        click.echo(f"wrote {path}")
    click.echo(study_table(rows, epochs))


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path())
@click.option("--bench", "bench_files", multiple=True, type=click.Path(),
              help="benchmark JSON to merge (e.g. from bench.py on a Raspberry Pi)")  # fmt: skip
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1))
@click.option("--runs", default=50, show_default=True, type=click.IntRange(1))
@click.option("--out", default="docs/results/report", show_default=True,
              help="writes OUT.json, OUT.md and OUT.png")  # fmt: skip
def report(run_dirs, bench_files, threads, runs, out):
    """Accuracy vs latency vs size of every exported model of RUN_DIRS (Pareto front marked)."""
    from liteconv.bench.report import (
        load_bench_documents,
        profile_sections,
        report_rows,
        write_profile_report,
        write_report,
    )

    docs = load_bench_documents(bench_files)
    rows = report_rows(run_dirs, bench_docs=docs, threads=threads, runs=runs)
    paths = write_report(rows, out)
    click.echo(Path(paths[1]).read_text())
    sections = profile_sections(run_dirs, docs)
    if sections:  # boards that ran 'bench.py --profile': their blocks next to the host's
        paths += write_profile_report(sections, out)
        click.echo(Path(paths[-2]).read_text())
    for path in paths:
        click.echo(f"wrote {path}")


@cli.command()
@click.argument("source", required=False, type=click.Path())
@click.option(
    "--mode", "modes", default="fp32,int8", show_default=True, help="comma list of fp32, int8"
)
@click.option("--target", default=None, help="a configs/targets name: its cores are pinned")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1))
@click.option("--runs", default=100, show_default=True, type=click.IntRange(1))
@click.option("--warmup", default=10, show_default=True, type=click.IntRange(0))
@click.option(
    "--samples",
    default=128,
    show_default=True,
    type=click.IntRange(1),
    help="training images whose activations calibrate the int8 blocks",
)
@click.option(
    "--out",
    default=None,
    type=click.Path(),
    help="write OUT.json, OUT.md, OUT.png (default for a run: RUN_DIR/profile)",
)
@click.option("--json", "json_path", default=None, type=click.Path(), help="also this JSON")
@click.option("--markdown", "md_path", default=None, type=click.Path(), help="also this .md")
@click.option("--plot", "plot_path", default=None, type=click.Path(), help="also this PNG")
@click.option(
    "--cache",
    default=".cache/latency",
    show_default=True,
    help="the latency table (one JSON per machine, runtime and target)",
)
@click.option("--refresh", is_flag=True, help="measure again what the latency table holds")  # fmt: skip
def profile(source, modes, target, threads, runs, warmup, samples, out, json_path, md_path,
            plot_path, cache, refresh):  # fmt: skip
    """Per-block latency of a run's model (default: the newest run) or of a MODEL.keras, as
    TFLite on this CPU: blocks as the converter fuses them, timed interleaved with the
    whole model; the sum of the blocks against the whole model as a prediction error."""
    import numpy as np

    from liteconv.bench.profile import profile_markdown, profile_plot, write_profile
    from liteconv.device.files import atomic_write_json, atomic_write_text
    from liteconv.device.targets import load_target

    wanted = [m.strip() for m in modes.split(",") if m.strip()]
    spec = load_target(target) if target else None
    if source and Path(source).is_file():
        from liteconv.pipeline.model_file import load_keras_model

        model = load_keras_model(source)
        shape = tuple(model.inputs[0].shape[1:])
        click.echo(f"{source}: no data with it: int8 blocks are calibrated with uniform "
                   "[0, 1] images (give a run folder to use its training images)")  # fmt: skip
        images = np.random.default_rng(0).uniform(size=(samples, *shape)).astype("float32")
        default_out, title = None, f"{Path(source).name}"
    else:
        from liteconv.pipeline import run as runlib
        from liteconv.pipeline.evaluate import float32_run_model, run_data

        run = runlib.Run.open(_run_dir(source))
        model = float32_run_model(run)
        images, _ = run_data(run).arrays("train", limit=samples)
        default_out = run.path / "profile"
        title = f"{run.manifest().get('experiment', run.path.parent.name)}/{run.path.name}"

    def progress(stage, mode, done, total):
        if done == total or done % 10 == 0:
            click.echo(f"{mode}: converted {done}/{total} blocks", err=True)

    from liteconv.bench.profile import profile_model

    results = profile_model(model, calibration=images, modes=wanted, threads=threads,
                            runs=runs, warmup=warmup, cores=spec.cores if spec else None,
                            target=spec.name if spec else "host", cache=cache or None,
                            refresh=refresh, progress=progress)  # fmt: skip
    title = f"{title}: per-block latency, {threads} thread(s)"
    for mode, result in results.items():
        click.echo(f"\n{profile_markdown(result, mode)}")
        if not result["measured"]:
            click.echo(f"({mode}: every figure from the latency table; --refresh measures again)")
    written = (
        list(write_profile(results, out or default_out, title)) if (out or default_out) else []
    )
    if json_path:
        written.append(atomic_write_json(json_path, {"title": title, "modes": results}))
    if md_path:
        text = "\n\n".join(profile_markdown(r, m) for m, r in results.items())
        written.append(atomic_write_text(md_path, f"# {title}\n\n{text}\n"))
    if plot_path:
        written.append(profile_plot(results, plot_path, title))
    for path in written:
        click.echo(f"wrote {path}")


@cli.command("bench-profile")
@click.option("--out", default="docs/results/profile", show_default=True)
@click.option("--runs", default=100, show_default=True, type=click.IntRange(1))
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1))
def bench_profile(out, runs, threads):
    """How well the sum of per-block latencies predicts the whole model: baseline,
    flattened, separable (28x28x1) and MobileNet v1 α=0.5 (128x128x3), fp32 and int8."""
    from liteconv.bench.profile import profile_study

    for path in profile_study(out, runs=runs, threads=threads, echo=click.echo):
        click.echo(f"wrote {path}")


@cli.group()
def device():
    """A board over SSH: describe it, fetch wheels for it, benchmark a run on it."""


def _ssh_options(fn):
    opts = [
        click.argument("address"),
        click.option("-i", "--identity", type=click.Path(), default=None,
                     help="private key (default: ssh's own keys, agent and ~/.ssh/config)"),
        click.option("--known-hosts", type=click.Path(), default=None,
                     help="known_hosts file (default: ~/.ssh/known_hosts)"),
        click.option("--accept-new-host-key", is_flag=True,
                     help="trust a board seen for the first time (a changed key still fails)"),
        click.option("--python", "python", default=None,
                     help="an interpreter on the board that already has numpy and a runtime"),
    ]  # fmt: skip
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _board(address, identity, known_hosts, accept_new_host_key):
    from liteconv.deploy.ssh import SSH, parse_address

    return SSH(parse_address(address), identity=identity, known_hosts=known_hosts,
               accept_new_host_key=accept_new_host_key)  # fmt: skip


@device.command("info")
@_ssh_options
@click.option("--json", "json_path", default=None, help="also write the description here")
def device_info(address, identity, known_hosts, accept_new_host_key, python, json_path):
    """CPU, cores, architecture, OS, Python and runtimes of the board at ssh://USER@HOST[:PORT]
    (installs nothing)."""
    from liteconv.deploy.remote import board_info, info_lines
    from liteconv.device.files import atomic_write_json

    if address.startswith("adb://"):
        from liteconv.deploy import adb

        info = adb.phone_info(adb.ADB(adb.parse_address(address)))
        lines = [f"{k:<15} {v}" for k, v in info.items()]
    else:
        info = board_info(_board(address, identity, known_hosts, accept_new_host_key), python)
        lines = info_lines(info)
    for line in lines:
        click.echo(line)
    if json_path:
        click.echo(f"wrote {atomic_write_json(json_path, info)}")


@device.command("wheels")
@_ssh_options
@click.argument("folder", type=click.Path())
@click.option("--runtime", type=click.Choice(["litert", "tflite-runtime"]), default="litert",
              show_default=True, help="which runtime's wheels (tflite-runtime: 32-bit boards)")  # fmt: skip
def device_wheels(address, identity, known_hosts, accept_new_host_key, python, folder, runtime):
    """Download numpy and the runtime for the board's platform into FOLDER (for
    'device run --wheelhouse FOLDER' on a board without internet)."""
    from liteconv.deploy.remote import board_info, fetch_wheels

    info = board_info(_board(address, identity, known_hosts, accept_new_host_key), python)
    for wheel in fetch_wheels(info, Path(folder), runtime, echo=click.echo):
        click.echo(f"  {wheel.name}")


@device.command("run")
@_ssh_options
@click.argument("source", required=False, type=click.Path())
@click.option(
    "--target",
    default="raspberry-pi-4",
    show_default=True,
    help="the target profile the bundle carries (threads, cores)",
)
@click.option(
    "--wheelhouse",
    type=click.Path(),
    default=None,
    help="install numpy and the runtime from these wheels only (offline board)",
)
@click.option("--threads", default=None, help="comma list (default: the target's)")
@click.option("--runs", default=100, show_default=True, type=click.IntRange(1))
@click.option("--warmup", default=10, show_default=True, type=click.IntRange(0))
@click.option("--keep", is_flag=True, help="leave the unpacked bundle on the board")
@click.option(
    "--remote-dir",
    default="~/.cache/liteconv",
    show_default=True,
    help="where on the board the venv and the bundles live",
)
@click.option("--bundle-dir", default="dist", show_default=True,
              help="where the bundle of a run is written on this machine")  # fmt: skip
@click.option("--profile", is_flag=True,
              help="also time every block of the model on the board (per-block table "
                   "beside the host's in the run's report_profile.md)")  # fmt: skip
def device_run(address, identity, known_hosts, accept_new_host_key, python, source, target,
               wheelhouse, threads, runs, warmup, keep, remote_dir, bundle_dir, profile):  # fmt: skip
    """Check and benchmark SOURCE (a run folder, default the newest run, or a bundle
    .tar.gz) on the board at ssh://USER@HOST[:PORT]; results into RUN_DIR/device/ and
    the run's report. adb://SERIAL: an Android phone through LiteRT's benchmark_model
    (pushed by you to /data/local/tmp; no --check there)."""
    from liteconv.deploy.remote import run_on_board

    if address.startswith("adb://"):  # a phone: benchmark_model, no Python, no --check
        from liteconv.deploy import adb

        phone = adb.ADB(adb.parse_address(address))
        adb.run_on_phone(phone, _run_dir(source), threads=int_list(threads) if threads else None,
                         runs=runs, warmup=warmup, echo=click.echo)  # fmt: skip
        return
    board = _board(address, identity, known_hosts, accept_new_host_key)
    src = source if source and Path(source).is_file() else _run_dir(source)
    result = run_on_board(board, src, target=target, python=python, wheelhouse=wheelhouse,
                          threads=int_list(threads) if threads else None, runs=runs,
                          warmup=warmup, keep=keep, cache=remote_dir.rstrip("/"),
                          bundle_dir=bundle_dir, profile=profile, echo=click.echo)  # fmt: skip
    click.echo(f"wrote {result['json']}")


@cli.command("bench-arm64")
@click.argument("bundle_path", required=False, type=click.Path())
@click.option("--cache", default=".cache/arm64", show_default=True,
              help="where the arm64 user space and wheels are kept")  # fmt: skip
@click.option("--runs", default=20, show_default=True, type=click.IntRange(1))
@click.option("--python-wrapper", is_flag=True,
              help="only prepare the emulated Python and print the path of a script that "
                   "runs it (for 'liteconv device run ... --python PATH')")  # fmt: skip
def bench_arm64(bundle_path, cache, runs, python_wrapper):
    """Check and time a device bundle on emulated 64-bit ARM (qemu; correctness, not speed)."""
    from liteconv.deploy import arm64
    from liteconv.deploy.arm64 import newest_bundle, run_bundle_arm64

    if python_wrapper:
        click.echo(arm64.python_wrapper(cache))
        return
    run_bundle_arm64(bundle_path or newest_bundle("dist"), cache=cache, runs=runs, echo=click.echo)


def main() -> None:
    """Console-script entry point."""
    cli()


if __name__ == "__main__":
    main()

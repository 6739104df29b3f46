"""The job, second half: export to TFLite, verify, benchmark, bundle, report, profile."""

from __future__ import annotations

from pathlib import Path

import click

from liteconv.cli.common import (
    bench_options,
    config_option,
    progress_bar,
    run_dir_or_newest,
    runtime_choice,
)
from liteconv.cli.root import cli
from liteconv.device import caches
from liteconv.device.__main__ import int_list  # no TensorFlow: the device CLI's parser
from liteconv.device.targets import list_targets


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
    """Convert RUN_DIR's model (default: the newest run) to .tflite files in RUN_DIR/export/
    and verify them against Keras."""
    from liteconv.export.run_export import export_run

    export_run(
        run_dir_or_newest(run_dir),
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
    """Check every RUN_DIR/export/*.tflite against the Keras model on the test split
    (RUN_DIR default: the newest run)."""
    from liteconv.export.run_export import verify_run

    verify_run(run_dir_or_newest(run_dir), echo=click.echo)


@cli.command()
@click.argument("models", nargs=-1, required=True, type=click.Path())
@click.option("--threads", help="comma list (default: bench.threads, else the target's, else 1)")
@click.option("--warmup", type=int, help="untimed runs per case  [default: bench.warmup, 10]")
@click.option("--runs", type=int, help="timed runs per case  [default: bench.runs, 100]")
@click.option("--runtime", type=runtime_choice(["auto", "litert", "tflite_runtime", "tf"]),
              help="interpreter: auto (LiteRT, else tflite_runtime, else tf.lite), or one of "
                   "them  [default: bench.runtime, auto]")  # fmt: skip
@click.option("--no-xnnpack", is_flag=True, help="builtin kernels instead of XNNPACK")
@click.option("--target", help="a configs/targets name (threads, cores to pin, runtime)")
@config_option
@click.option("--json", "json_path", type=click.Path(), help="write the records as JSON")
@click.option("--markdown", "md_path", type=click.Path(), help="write the Markdown table")
@click.option("--crosscheck", is_flag=True,
              help="also time each model with the litert-benchmark tool of ai-edge-litert")  # fmt: skip
@click.option("--emulate", "emulate_targets", default=None, metavar="TARGET[,TARGET]",
              help="also estimate each model's latency on these targets' cores by emulation "
                   "(qemu -cpu + instruction counts + llvm-mca cycles, or instructions on a "
                   "32-bit target; cached), e.g. raspberry-pi-4,raspberry-pi-5,"
                   "raspberry-pi-3-32bit")  # fmt: skip
@click.option(
    "--emulate-cache",
    default=str(caches.EMULATE),
    show_default=True,
    help="with --emulate: where estimates and the counting plugin are kept",
)
def bench(models, threads, warmup, runs, runtime, no_xnnpack, target, config_path, json_path,
          md_path, crosscheck, emulate_targets, emulate_cache):  # fmt: skip
    """Latency, throughput and memory of .tflite MODELS (interleaved; no TensorFlow).

    Defaults come from the bench: section of -c CONFIG, or of the run the models belong to.
    """
    from liteconv.bench.host import bench_models

    opts = bench_options(models, config_path, {
        "bench.threads": int_list(threads, "--threads") if threads else None,
        "bench.warmup": warmup, "bench.runs": runs, "bench.runtime": runtime,
        "bench.xnnpack": False if no_xnnpack else None, "bench.target": target})  # fmt: skip
    bench_models(list(models), opts, progress=progress_bar("benchmarking"),
                 litert_crosscheck=crosscheck,
                 emulate=[t.strip() for t in (emulate_targets or "").split(",") if t.strip()],
                 emulate_cache=emulate_cache, json_path=json_path, md_path=md_path,
                 echo=click.echo, warn=lambda line: click.echo(line, err=True))  # fmt: skip


@cli.command()
@click.argument("run_dir", type=click.Path(), required=False)
@click.option("-o", "--out", default="dist", show_default=True, help="output folder")
@click.option(
    "--target",
    default="raspberry-pi-4",
    show_default=True,
    help=f"the board's target profile: {', '.join(list_targets())}, or a YAML path",
)
@click.option("--samples", default=16, show_default=True, type=click.IntRange(1),
              help="reference test images for 'bench.py --check'")  # fmt: skip
@click.option("--profile", is_flag=True,
              help="also carry every block of the model, for 'bench.py --profile'")  # fmt: skip
@click.option("--profile-mode", "profile_modes", default="fp32,int8", show_default=True,
              help="comma list of fp32, int8: the modes of the block models")  # fmt: skip
@click.option("--emulate", is_flag=True,
              help="estimate every model on the target's emulated core first; the bundle's "
                   "README then says what to expect on the board")  # fmt: skip
@click.option("--emulate-cache", default=str(caches.EMULATE), show_default=True,
              help="with --emulate: the estimates by model hash")  # fmt: skip
def bundle(run_dir, out, target, samples, profile, profile_modes, emulate, emulate_cache):
    """Pack RUN_DIR's .tflite models (default: the newest run) into a device bundle
    (.tar.gz, no TensorFlow needed)."""
    from liteconv.deploy.bundle import make_bundle

    modes = [m.strip() for m in profile_modes.split(",") if m.strip()]
    path = make_bundle(run_dir_or_newest(run_dir), out=out, target=target, samples=samples,
                       profile=profile, profile_modes=modes, emulate=emulate,
                       emulate_cache=emulate_cache, echo=click.echo)  # fmt: skip
    click.echo(f"wrote {path}")


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path())
@click.option("--bench", "bench_files", multiple=True, type=click.Path(),
              help="benchmark JSON to merge (e.g. from bench.py on a Raspberry Pi)")  # fmt: skip
@click.option(
    "--threads",
    default=1,
    show_default=True,
    type=click.IntRange(1),
    help="threads of the host timing (the report times every model again here)",
)
@click.option("--runs", default=50, show_default=True, type=click.IntRange(1),
              help="timed runs per model of that host timing")  # fmt: skip
@click.option("--out", default=None, type=click.Path(),
              help="writes OUT.json, OUT.md and OUT.png (and OUT_profile.* when a board "
                   "profiled blocks)  [default: RUN_DIR/report for one run, runs/report for "
                   "several]")  # fmt: skip
@click.option("--emulate", "emulate_targets", default=None, metavar="T1,T2",
              help="also each model's latency estimated on these targets' emulated cores "
                   "(e.g. raspberry-pi-4,raspberry-pi-5)")  # fmt: skip
@click.option("--emulate-cache", default=str(caches.EMULATE), show_default=True,
              help="with --emulate: the estimates by model hash")  # fmt: skip
def report(run_dirs, bench_files, threads, runs, out, emulate_targets, emulate_cache):
    """Accuracy vs latency vs size of every exported model of RUN_DIRS (Pareto front marked).

    Writes into the run (one RUN_DIR) or runs/ (several) unless --out says otherwise; the
    repository's docs/results/report.* is written by 'make report' only."""
    from liteconv.bench.report import (
        load_bench_documents,
        profile_sections,
        report_rows,
        write_profile_report,
        write_report,
    )

    if out is None:
        out = str(Path(run_dirs[0]) / "report") if len(run_dirs) == 1 else "runs/report"
    docs = load_bench_documents(bench_files)
    from liteconv.device.targets import load_target

    boards = [load_target(t.strip()) for t in (emulate_targets or "").split(",") if t.strip()]
    rows = report_rows(run_dirs, bench_docs=docs, threads=threads, runs=runs, emulate=boards,
                       emulate_cache=emulate_cache, echo=click.echo)  # fmt: skip
    paths = write_report(rows, out)
    click.echo(Path(paths[1]).read_text())
    sections = profile_sections(run_dirs, docs)
    if sections:  # boards that ran 'bench.py --profile': their blocks next to the host's
        paths += write_profile_report(sections, out)
        click.echo(Path(paths[-2]).read_text())
    for path in paths:
        click.echo(f"wrote {path}")


@cli.command(
    short_help="Per-block latency of a run's model or a MODEL.keras as TFLite on "
    "this CPU, and the sum of the blocks as a prediction of the whole."
)
@click.argument("source", required=False, type=click.Path())
@click.option(
    "--mode", "modes", default="fp32,int8", show_default=True, help="comma list of fp32, int8"
)
@click.option("--target", default=None, help="a configs/targets name: its cores are pinned")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1),
              help="interpreter threads")  # fmt: skip
@click.option("--runs", default=100, show_default=True, type=click.IntRange(1),
              help="timed runs per block and of the whole model")  # fmt: skip
@click.option("--warmup", default=10, show_default=True, type=click.IntRange(0),
              help="untimed runs before timing")  # fmt: skip
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
    default=str(caches.LATENCY),
    show_default=True,
    help="the latency table (one JSON per machine, runtime and target)",
)
@click.option("--refresh", is_flag=True, help="measure again what the latency table holds")  # fmt: skip
@click.option("--emulate", "emulate_target", default=None, metavar="TARGET",
              help="estimate every block on TARGET's emulated core instead of timing it here "
                   "(1 thread; e.g. raspberry-pi-4)")  # fmt: skip
@click.option("--emulate-cache", default=str(caches.EMULATE), show_default=True,
              help="with --emulate: the estimates by model hash")  # fmt: skip
def profile(source, modes, target, threads, runs, warmup, samples, out, json_path, md_path,
            plot_path, cache, refresh, emulate_target, emulate_cache):  # fmt: skip
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
        click.echo(f"{source}: no data with it: int8 blocks are calibrated with uniform "
                   "[0, 1] images (give a run folder to use its training images)")  # fmt: skip
        rng = np.random.default_rng(0)
        images = [rng.uniform(size=(samples, *x.shape[1:])).astype("float32")
                  for x in model.inputs]  # one array per model input  # fmt: skip
        images = images[0] if len(images) == 1 else images
        default_out, title = None, f"{Path(source).name}"
    else:
        from liteconv.pipeline import run as runlib
        from liteconv.pipeline.evaluate import float32_run_model, run_data

        run = runlib.Run.open(run_dir_or_newest(source))
        model = float32_run_model(run)
        images, _ = run_data(run).arrays("train", limit=samples)
        default_out = run.path / "profile"
        title = f"{run.manifest().get('experiment', run.path.parent.name)}/{run.path.name}"

    def progress(stage, mode, done, total):
        if done == total or done % 10 == 0:
            click.echo(f"{mode}: converted {done}/{total} blocks", err=True)

    from liteconv.bench.latency import Emulated, HostTimed

    if emulate_target:
        board = load_target(emulate_target)
        if default_out is not None:  # beside the host's profile, not over it
            default_out = default_out.with_name(f"profile-{board.name}")
        source_ = Emulated(board, cache=emulate_cache)
    else:
        source_ = HostTimed(threads=threads, runs=runs, warmup=warmup,
                            cores=spec.cores if spec else None,
                            target=spec.name if spec else "host", cache=cache or None,
                            refresh=refresh)  # fmt: skip
    results = source_.profile(model, calibration=images, modes=wanted, echo=click.echo,
                              progress=progress)  # fmt: skip
    title = f"{title}: {source_.title}"
    for mode, result in results.items():
        click.echo(f"\n{profile_markdown(result, mode)}")
        if not result["measured"] and "emulated" not in result:
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

"""The studies behind the README's tables: `liteconv study layers|train|flatten|resnet|profile|emulation`."""

from __future__ import annotations

import click

from liteconv.cli.common import SectionedGroup, parse_overrides, parse_shape, set_option
from liteconv.cli.root import cli
from liteconv.device import caches
from liteconv.device.__main__ import int_list  # no TensorFlow: the device CLI's parser

# Studies write their tables where --out says; the defaults stay under runs/ (not tracked),
# and the make targets that own the repository's docs/results/ files pass --out there.
STUDIES = "runs/studies"


@cli.group(
    cls=SectionedGroup,
    short_help="The README's tables, measured: study layers, train, flatten, resnet, profile, "
    "emulation.",
)
def study():
    """The studies behind the README's tables: layer speed, training throughput, flatten
    accuracy (on this project's CNN and on a plain-Keras ResNet), per-block latency,
    emulated board latency (`make bench-layers|bench-train|bench-flatten|
    bench-flatten-resnet|bench-profile|bench-emulation` write docs/results/)."""


@study.command("train")
@click.option("--models", default="baseline_cnn,flattened_cnn,separable_cnn", show_default=True,
              help="comma list of registered models")  # fmt: skip
@click.option("--input-shape", default="28,28,1", show_default=True, help="H,W,C")
@click.option("--batch-size", default=128, show_default=True, type=click.IntRange(1),
              help="images per training step")  # fmt: skip
@click.option("--steps", default=20, show_default=True, type=click.IntRange(1),
              help="timed training steps per model and round")  # fmt: skip
@click.option("--rounds", default=5, show_default=True, type=click.IntRange(1),
              help="interleaved rounds (the median is reported)")  # fmt: skip
@click.option("--onednn", default="off,on", show_default=True,
              help="TensorFlow CPU kernels to compare, each in its own process: off (the "
                   "portable ones every machine has), on (oneDNN); 'default' measures this "
                   "process's setting only")  # fmt: skip
@click.option("--out", default=f"{STUDIES}/bench_train", show_default=True,
              help="writes OUT.json and OUT.md")  # fmt: skip
def bench_train(models, input_shape, batch_size, steps, rounds, onednn, out):
    """Training throughput (images/s) of several models, measured side by side, with
    TensorFlow's oneDNN kernels off and on, and where a training step's time goes."""
    from liteconv.studies.training import training_study

    names = [m.strip() for m in models.split(",") if m.strip()]
    settings = [s.strip() for s in onednn.split(",") if s.strip()]
    text = training_study(out, names, settings, input_shape=parse_shape(input_shape),
                          batch_size=batch_size, steps=steps, rounds=rounds, echo=click.echo)  # fmt: skip
    click.echo(text)
    click.echo(f"wrote {out}.json and {out}.md")


@study.command("layers")
@click.option("--sizes", default="16,32,48,64,80", show_default=True, help="input sizes N")
@click.option("--channels", default="64,128", show_default=True, help="C in = C out")
@click.option("--threads", default="1,2", show_default=True, help="comma list of thread counts")
@click.option("--runs", default=50, show_default=True, type=click.IntRange(1),
              help="timed runs per case")  # fmt: skip
@click.option("--no-models", is_flag=True, help="skip the whole-model comparison")
@click.option("--out", default=f"{STUDIES}/bench_layers", show_default=True,
              help="writes OUT.csv/.json/.md and OUT_latency.png, OUT_speedup.png")  # fmt: skip
def compare(sizes, channels, threads, runs, no_models, out):
    """Standard vs flattened vs separable convolution latency (the papers' speed tables)."""
    from liteconv.bench.report import write_compare
    from liteconv.device.machine import machine_info
    from liteconv.studies.layers import compare_layers, compare_models

    thread_list = int_list(threads, "--threads")
    rows = compare_layers(
        sizes=int_list(sizes, "--sizes"), channels=int_list(channels, "--channels"),
        threads=thread_list, runs=runs, echo=click.echo,
    )  # fmt: skip
    if not no_models:
        rows += compare_models(threads=thread_list, runs=runs, echo=click.echo)
    for path in write_compare(rows, out, machine=machine_info()):
        click.echo(f"wrote {path}")


def _scratch_choice(names: list[str], no_scratch: bool, scratch_for: str | None):
    from liteconv.device.errors import LiteconvError

    if no_scratch and scratch_for:
        raise LiteconvError("give --no-scratch or --scratch-for, not both")
    if scratch_for is None:
        return not no_scratch
    chosen = {v.strip() for v in scratch_for.split(",") if v.strip()}
    unknown = sorted(chosen - set(names))
    if unknown:
        raise LiteconvError(
            f"--scratch-for {unknown[0]}: not one of --variants ({', '.join(names)})"
        )
    return chosen


@study.command("flatten")
@click.argument("parent_dir", type=click.Path())
@click.option("--variants", default="lvh1,lvh2,cp0.5,cp0.25", show_default=True,
              help="comma list: lvh1, lvh2, cpF (rank ratio) or cpR (rank)")  # fmt: skip
@click.option("--epochs", default=3, show_default=True, type=click.IntRange(1),
              help="fine-tune epochs of every variant (and of the from-scratch runs)")  # fmt: skip
@click.option("--no-scratch", is_flag=True, help="skip the from-scratch comparison")
@click.option("--scratch-for", default=None,
              help="comma list: from-scratch runs only for these variants (finished ones of "
                   "the others are still shown)")  # fmt: skip
@click.option("--runs", default=200, show_default=True, type=click.IntRange(1),
              help="timed runs per model in the latency benchmark")  # fmt: skip
@click.option("--runs-dir", default="runs", show_default=True, help="where the new runs go")
@click.option("--out", default=f"{STUDIES}/flatten", show_default=True,
              help="writes OUT.json and OUT.md")  # fmt: skip
def bench_flatten(parent_dir, variants, epochs, no_scratch, scratch_for, runs, runs_dir, out):
    """Decompose-then-fine-tune variants of PARENT_DIR against training from scratch.
    Levers per variant: +da data-aware fit, +kd distillation, +wu warm-up, +slow a tenth
    of the parent's learning rate (a lever not named is off)."""
    from liteconv.studies.flatten_study import flatten_study, study_table, write_study

    names = [v.strip() for v in variants.split(",") if v.strip()]
    scratch = _scratch_choice(names, no_scratch, scratch_for)
    rows = flatten_study(parent_dir, names, epochs=epochs, scratch=scratch,
                         out_runs=runs_dir, runs=runs, echo=click.echo)  # fmt: skip
    for path in write_study(rows, out, epochs=epochs, parent=str(parent_dir)):
        click.echo(f"wrote {path}")
    click.echo(study_table(rows, epochs))


@study.command("resnet")
@click.option("-c", "--config", "config_path", default="configs/experiments/shapes_resnet.yaml",
              show_default=True, type=click.Path(dir_okay=False),
              help="the parent's training config (an image folder; written if missing)")  # fmt: skip
@set_option
@click.option("--per-class", default=600, show_default=True, type=click.IntRange(10),
              help="generated images per class when the folder is written")  # fmt: skip
@click.option("--variants", default="lvh1+da+kd,lvh2+da+kd,cp0.5+da+kd", show_default=True,
              help="as for study flatten")  # fmt: skip
@click.option("--epochs", default=3, show_default=True, type=click.IntRange(1),
              help="fine-tune epochs of every variant")  # fmt: skip
@click.option("--scratch-for", default=None, help="as for study flatten (default: every variant)")
@click.option("--runs", default=200, show_default=True, type=click.IntRange(1),
              help="timed runs per model in the latency benchmark")  # fmt: skip
@click.option("--runs-dir", default="runs", show_default=True, help="where the new runs go")
@click.option("--out", default=f"{STUDIES}/flatten_resnet", show_default=True,
              help="writes OUT.json and OUT.md")  # fmt: skip
def bench_resnet(config_path, sets, per_class, variants, epochs, scratch_for, runs, runs_dir, out):
    """A second parent: a plain-Keras CIFAR ResNet (strided convs, skips) trained on a
    generated image folder, then flattened like study flatten."""
    from liteconv.studies.flatten_study import flatten_study, study_table, write_study
    from liteconv.studies.resnet_parent import train_resnet_parent

    names = [v.strip() for v in variants.split(",") if v.strip()]
    scratch = _scratch_choice(names, False, scratch_for)
    from liteconv.device.errors import LiteconvError

    try:
        parent = train_resnet_parent(config_path, per_class=per_class, overrides=parse_overrides(sets),
                                     out_runs=runs_dir, echo=click.echo)  # fmt: skip
    except ValueError as err:
        raise LiteconvError(str(err)) from None
    rows = flatten_study(parent.path, names, epochs=epochs, scratch=scratch, out_runs=runs_dir,
                         runs=runs, echo=click.echo)  # fmt: skip
    preface = (
        "Second parent: He et al.'s CIFAR ResNet in plain Keras "
        "(`liteconv.studies.resnet_parent.small_resnet`: a 3×3 stem, one basic block per "
        "stage at 32/64/128 channels, stride-2 3×3 convolutions and 1×1 projection "
        f"shortcuts), trained by `liteconv train` from `{config_path}` on the generated "
        "image folder (10 classes of drawn figures, 32×32 RGB PNGs, written by "
        "`resnet_parent.write_shapes_folder`); parent test accuracy "
        f"{100 * rows[0]['test_accuracy']:.2f} %."
    )
    for path in write_study(rows, out, epochs=epochs, parent=str(parent.path), preface=preface):
        click.echo(f"wrote {path}")
    click.echo(study_table(rows, epochs))


@study.command("profile")
@click.option("--out", default=f"{STUDIES}/profile", show_default=True,
              help="writes OUT.json, OUT.md and OUT.png")  # fmt: skip
@click.option("--runs", default=100, show_default=True, type=click.IntRange(1),
              help="timed runs per block")  # fmt: skip
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1),
              help="interpreter threads")  # fmt: skip
def bench_profile(out, runs, threads):
    """How well the sum of per-block latencies predicts the whole model: baseline,
    flattened, separable (28x28x1) and MobileNet v1 α=0.5 (128x128x3), fp32 and int8."""
    from liteconv.bench.profile import profile_study

    for path in profile_study(out, runs=runs, threads=threads, echo=click.echo):
        click.echo(f"wrote {path}")


@study.command("emulation")
@click.option("--boards", default="", help="published boards to judge, comma-separated "
              "(e.g. 'Raspberry Pi 4,Pixel 4'; default: every board a target models)")  # fmt: skip
@click.option("--published", default=None, type=click.Path(exists=True, dir_okay=False),
              help="a CSV of published latencies in the shipped one's columns "
                   "(default: the shipped studies/published_latency.csv)")  # fmt: skip
@click.option("--max-macs", default=4e9, show_default=True, type=click.FloatRange(0),
              help="leave out architectures with more MACs (their emulation takes too long)")  # fmt: skip
@click.option("--no-host", is_flag=True, help="skip the host-time baseline")
@click.option(
    "--cache",
    default=str(caches.EMULATE),
    show_default=True,
    help="the emulation cache (estimates by model hash and target)",
)
@click.option("--out", default=f"{STUDIES}/emulation", show_default=True,
              help="writes OUT.json and OUT.md")  # fmt: skip
def emulation(boards, published, max_macs, no_host, cache, out):
    """Emulated latency against published board figures, each constant fitted on one
    named table and every goal judged on rows held out from it, beside two baselines
    (MACs × constant, this host's time × constant)."""
    from liteconv.studies.emulation import PUBLISHED_CSV, emulation_study

    paths = emulation_study(out, published=published or PUBLISHED_CSV,
                            boards=[b.strip() for b in boards.split(",") if b.strip()] or None,
                            max_macs=max_macs, host=not no_host, cache=cache,
                            echo=click.echo)  # fmt: skip
    click.echo(paths[1].read_text())
    for path in paths:
        click.echo(f"wrote {path}")


@study.command("mcu")
@click.option("--out", default=f"{STUDIES}/mcu", show_default=True,
              help="writes OUT.json and OUT.md")  # fmt: skip
def mcu_table(out):
    """The three CNNs (int8, per-channel and per-tensor) on every shipped microcontroller
    board under TFLM: model size, arena, fits, TFLM against LiteRT."""
    from liteconv.studies.mcu_study import mcu_study

    paths = mcu_study(out, echo=click.echo)
    click.echo(paths[1].read_text())
    for path in paths:
        click.echo(f"wrote {path}")

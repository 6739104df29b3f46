"""Decompose-then-fine-tune against the parent and against training from scratch.

For a trained parent run: each variant (``lvh1``, ``lvh2``, ``cp0.5`` ...) goes through
``liteconv flatten`` (accuracy right after decomposition, after BatchNorm re-estimation,
after every fine-tune epoch); the same decomposed architecture is also trained from random
weights for the same number of epochs with the parent's full schedule. Every model (parent
included) is converted to fp32 and post-training int8 TFLite and timed side by side in one
interleaved benchmark. Writes ``OUT.json`` and ``OUT.md``.

Example:
    >>> rows = flatten_study("runs/fashion_mnist_baseline/20261123-...", ["lvh1", "cp0.5"])
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from liteconv.bench.flatten_run import flatten_run
from liteconv.compat import keras
from liteconv.config import DistillConfig
from liteconv.device.errors import LiteconvError
from liteconv.device.files import atomic_write_json, atomic_write_text
from liteconv.device.harness import benchmark
from liteconv.device.machine import machine_info
from liteconv.device.tables import format_table
from liteconv.export.convert import to_tflite
from liteconv.pipeline import run as runlib
from liteconv.pipeline.evaluate import load_run_model, run_data
from liteconv.pipeline.train import train

LEVERS = {
    "da": "data-aware decomposition (factors fitted to the parent's layer outputs)",
    "kd": "distillation from the parent",
    "wu": "1 warm-up epoch",
    "slow": "a tenth of the parent's learning rate (else a quarter)",
    "lrF": "F times the parent's learning rate (e.g. +lr0.01)",
}


def parse_variant(text: str) -> dict:
    """``lvh1`` / ``lvh2`` / ``cp0.5`` (rank ratio) / ``cp32`` (rank), each optionally with
    levers ``+da`` (data-aware decomposition), ``+kd`` (distil from the parent), ``+wu``
    (one warm-up epoch), ``+slow`` (a tenth of the parent's learning rate) or ``+lrF``
    (F times it; one learning-rate lever at most) → flatten
    options. A lever not named is off (``flatten``'s defaults are not used), so each
    lever's contribution is measured against the plain kernel fit and label fine-tune."""
    base, *levers = text.split("+")
    fractions = [_fraction(lever[2:]) for lever in levers if lever.startswith("lr")]
    bad = [lever for lever in levers if lever not in LEVERS and not lever.startswith("lr")]
    bad += [
        lever for lever, f in zip([x for x in levers if x.startswith("lr")], fractions) if f is None
    ]
    if "slow" in levers:
        fractions.append(0.1)
    if len(fractions) > 1:
        bad.append("+".join(x for x in levers if x.startswith("lr") or x == "slow"))
    if bad:
        raise LiteconvError(f"variant {text!r}: unknown lever {bad[0]!r}; levers: "
                            + ", ".join(f"+{k} ({v})" for k, v in LEVERS.items()))  # fmt: skip
    options: dict = {
        "distill": "kd" in levers,
        "data_aware": "da" in levers,
        "warmup_epochs": 1 if "wu" in levers else 0,
    }
    if fractions:
        options["lr_fraction"] = fractions[0]
    if base in ("lvh1", "lvh2"):
        return {"method": "lvh", "stages": int(base[-1]), **options}
    if base.startswith("cp"):
        value = base[2:]
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if number > 0 and "." in value:
            return {"method": "cp", "rank_ratio": number, **options}
        if number >= 1 and number == int(number):
            return {"method": "cp", "rank": int(number), **options}
    raise LiteconvError(
        f"variant {text!r}: expected lvh1, lvh2, cpF (rank ratio, e.g. cp0.5) or cpR, "
        "optionally +da, +kd, +wu, +slow or +lrF"
    )


def _fraction(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if 0 < value <= 1 else None


def _finished(out_runs, experiment: str, parent: Path | None, epochs: int):
    """A complete run of ``experiment`` from an earlier study (same parent and epochs)."""
    folder = Path(out_runs) / experiment
    for path in sorted(folder.glob("*/manifest.json"), reverse=True):
        run = runlib.Run(path.parent)
        manifest = run.manifest()
        if manifest.get("status") != "complete" or not (run.path / runlib.MODEL).is_file():
            continue
        if run.config().train.epochs != epochs:
            continue
        if parent is not None and (manifest.get("parent") or {}).get("run") != str(parent):
            continue
        return run
    return None


def _scratch(child: runlib.Run, parent_cfg, epochs: int, out: Path, echo,
             teacher: Path | None = None) -> runlib.Run:  # fmt: skip
    """The child's architecture from random weights, the parent's schedule for ``epochs``
    (distilled from ``teacher`` when given: the fair baseline for a distilled variant)."""
    model = load_run_model(child)
    fresh = keras.models.clone_model(model)  # same layers, new initial weights
    init = out / f"{child.path.parent.name}_scratch_init.keras"
    init.parent.mkdir(parents=True, exist_ok=True)
    runlib.save_model_atomic(fresh, init)
    distill = DistillConfig(str(teacher.resolve())) if teacher is not None else DistillConfig()
    cfg = dataclasses.replace(
        parent_cfg, experiment=f"{child.path.parent.name}_scratch",
        train=dataclasses.replace(parent_cfg.train, epochs=epochs, distill=distill),
        model=dataclasses.replace(parent_cfg.model, init_from=str(init.resolve())),
    )  # fmt: skip
    return train(cfg, out=out, echo=echo)


def _latencies(models: dict, x_cal, runs: int) -> dict:
    """p50 ms of every model in fp32 and int8, measured interleaved in one run."""
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for name, model in models.items():
            for mode in ("fp32", "int8"):
                blob = to_tflite(
                    model, mode=mode, representative_data=x_cal if mode == "int8" else None
                )
                path = Path(tmp) / f"{name}__{mode}.tflite"
                path.write_bytes(blob)
                files[path] = (name, mode)
        records = benchmark(list(files), threads=[1], runs=runs, warmup=10)
    out: dict = {}
    for rec in records:
        name, mode = files[Path(rec["file"])]
        out.setdefault(name, {})[mode] = rec["p50_ms"]
    return out


def flatten_study(
    parent_dir: str | Path,
    variants: list[str],
    *,
    epochs: int = 3,
    scratch: bool | set[str] = True,  # False: no new from-scratch runs (finished ones are
    # still shown); a set: new ones only for these variants
    out_runs: str | Path = "runs",
    runs: int = 200,
    echo=print,
) -> list[dict]:
    """Rows per model: MACs, params, accuracies (decomposed / per epoch / scratch), latency."""
    parent = runlib.Run.open(parent_dir)
    parent_cfg = parent.config()
    manifest = parent.manifest()
    base_model = load_run_model(parent)
    rows = [{"model": "parent", "variant": manifest.get("experiment"),
             "macs": manifest["model"]["macs"], "params": manifest["model"]["params"],
             "test_accuracy": manifest["metrics"]["test_accuracy"]}]  # fmt: skip
    models = {"parent": base_model}
    for variant in variants:
        options = parse_variant(variant)
        # the levers, not flatten's per-method defaults: a quarter unless a lever says
        fraction = options.pop("lr_fraction", None) or 0.25
        options["learning_rate"] = parent_cfg.train.learning_rate * fraction
        name = f"{manifest.get('experiment')}_{variant.replace('+', '_')}"
        child = _finished(out_runs, name, parent.path, epochs)
        if child is None:
            echo(f"== {variant}: decompose, fine-tune {epochs} epoch(s)")
            child = flatten_run(parent.path, epochs=epochs, out=out_runs, name=name, echo=echo,
                                **options)  # fmt: skip
        else:
            echo(f"== {variant}: reusing the finished run {child.path}")
        info = child.manifest()
        flat = info["flatten"]
        row = {"model": variant, "variant": variant, "macs": flat["macs_after"],
               "params": flat["params_after"], "accuracy_decomposed": flat["accuracy_decomposed"],
               "accuracy_bn_reestimated": flat["accuracy_bn_reestimated"],
               "test_accuracy_per_epoch": flat.get("test_accuracy_per_epoch", {}),
               "test_accuracy": info["metrics"]["test_accuracy"], "run": str(child.path),
               "mean_rel_error": sum(r["rel_error"] for r in flat["layers"]) / len(flat["layers"])}  # fmt: skip
        errors = [r.get("output_error") for r in flat["layers"]]
        if errors and None not in errors:  # runs from before output errors were recorded lack it
            row["mean_output_error"] = sum(errors) / len(errors)
        models[variant] = load_run_model(child)
        fresh = _finished(out_runs, f"{name}_scratch", None, epochs)  # from an earlier study
        if fresh is None and (scratch is True or (scratch and variant in scratch)):
            echo(f"== {variant}: the same architecture from scratch, {epochs} epoch(s)")
            teacher = parent.path / runlib.MODEL if options["distill"] else None
            fresh = _scratch(child, parent_cfg, epochs, Path(out_runs), echo, teacher)
        if fresh is not None:
            row["scratch_test_accuracy"] = fresh.manifest()["metrics"]["test_accuracy"]
        rows.append(row)
    x_cal, _ = run_data(parent).arrays("train", limit=300)
    echo(f"timing {len(models)} models x fp32/int8, interleaved, 1 thread")
    latency = _latencies(models, x_cal, runs)
    for row in rows:
        row["p50_ms_fp32"] = latency[row["model"]]["fp32"]
        row["p50_ms_int8"] = latency[row["model"]]["int8"]
    ref = rows[0]
    for row in rows:
        row["macs_reduction"] = round(ref["macs"] / row["macs"], 2)
        row["speedup_fp32"] = round(ref["p50_ms_fp32"] / row["p50_ms_fp32"], 2)
        row["speedup_int8"] = round(ref["p50_ms_int8"] / row["p50_ms_int8"], 2)
    return rows


def study_table(rows: list[dict], epochs: int) -> str:
    """The Markdown table of a study."""

    def pct(value):
        return f"{100 * value:.2f}%" if isinstance(value, float) else "-"

    def at(row, epoch):
        return pct(row.get("test_accuracy_per_epoch", {}).get(str(epoch)))

    return format_table(
        ["model", "MACs", "÷ MACs", "params", "output error", "after decomposition",
         "+ BN re-estimation",
         "1 epoch", f"{epochs} epochs", f"scratch, {epochs} epochs", "fp32 ms", "× fp32",
         "int8 ms", "× int8"],
        [[r["model"], r["macs"], r["macs_reduction"], r["params"],
          f"{r['mean_output_error']:.3f}" if "mean_output_error" in r else "-",
          pct(r.get("accuracy_decomposed")), pct(r.get("accuracy_bn_reestimated")),
          at(r, 1) if "test_accuracy_per_epoch" in r else "-",
          at(r, epochs) if "test_accuracy_per_epoch" in r else pct(r["test_accuracy"]),
          pct(r.get("scratch_test_accuracy")), r["p50_ms_fp32"], r["speedup_fp32"],
          r["p50_ms_int8"], r["speedup_int8"]] for r in rows],
        markdown=True,
    )  # fmt: skip


def write_study(rows: list[dict], out: str | Path, *, epochs: int, parent: str,
                preface: str = "") -> list[Path]:  # fmt: skip
    """``OUT.json`` and ``OUT.md`` (``preface``: a paragraph on the parent, first)."""
    out = Path(out)
    machine = machine_info()
    atomic_write_json(out.with_suffix(".json"), {"machine": machine, "parent": parent,
                                                 "preface": preface, "epochs": epochs,
                                                 "rows": rows})  # fmt: skip
    header = (
        f"Parent: {parent}. Decomposition: the kernel fit (+da: then every decomposed layer "
        f"refitted to the parent layer's outputs on 2,048 training images, layer after layer); "
        f"'output error': the mean over the decomposed layers of the relative error of each "
        f"layer's output before its activation, on held-out training images. "
        f"Fine-tune: the parent's optimizer and augmentation, a quarter of its "
        f"learning rate (+slow: a tenth; +lrF: F times it), cosine decay over {epochs} epoch(s) (+wu: after one "
        f"linear warm-up epoch), labels only (+kd: distilled from the parent, temperature 4, "
        f"weight 0.5); test accuracy on the full test split after each epoch. 'scratch': the "
        f"same decomposed architecture from random weights, the parent's full learning rate, "
        f"{epochs} epoch(s), distilled too for +kd variants. Latency: LiteRT with "
        f"XNNPACK, 1 thread, p50 of interleaved runs, fp32 and post-training int8, on "
        f"{machine['cpu']} ({machine['cores_usable']} usable cores)."
    )
    atomic_write_text(out.with_suffix(".md"),
                      f"{preface + chr(10) * 2 if preface else ''}{header}\n\n"
                      f"{study_table(rows, epochs)}\n")  # fmt: skip
    return [out.with_suffix(".json"), out.with_suffix(".md")]

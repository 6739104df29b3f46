"""Result files: CSV/JSON/Markdown tables and PNG plots for ``compare`` and ``report``.

With ``bundle.py`` and ``run.py`` this is one of the three places that write files.

Example:
    >>> write_compare(rows, "docs/results/bench_layers", machine=machine_info())
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from liteconv.bench.plots import pyplot, save_png
from liteconv.device import caches
from liteconv.device.files import atomic_write_json, atomic_write_text
from liteconv.device.tables import format_table
from liteconv.pipeline.run import DEVICE, EXPORT, VERIFY_JSON


def _compare_table(rows: list[dict]) -> str:
    return format_table(
        ["scope", "size", "C", "variant", "dtype", "threads", "MACs", "params", "p50 ms",
         "theory ×", "measured ×", "realised", "params ÷"],
        [[r.get("model", "layer") if r["scope"] == "model" else "layer", r["size"],
          r["channels"], r["variant"], r["dtype"], r["threads"], r["macs"], r["params"],
          r["p50_ms"], r["theoretical_speedup"], r["measured_speedup"],
          f"{r['realised_share']:.0%}", r["param_reduction"]] for r in rows],
        markdown=True,
    )  # fmt: skip


def _compare_plot(layers: list[dict], kind: str, key: str, ylabel: str, machine: dict, path):
    """One panel per (channels, dtype, threads): ``key`` against the input size per variant."""
    plt = pyplot()
    combos = sorted({(r["channels"], r["dtype"], r["threads"]) for r in layers})
    ncols = min(4, len(combos))
    nrows = -(-len(combos) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), squeeze=False,
                             layout="constrained")  # fmt: skip
    for ax in axes.flat[len(combos) :]:
        ax.set_visible(False)
    for ax, (c, dtype, t) in zip(axes.flat, combos):
        for variant in dict.fromkeys(r["variant"] for r in layers):
            if kind == "speedup" and variant == "standard":
                continue
            pts = sorted((r["size"], r[key]) for r in layers if r["variant"] == variant
                         and (r["channels"], r["dtype"], r["threads"]) == (c, dtype, t))  # fmt: skip
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=variant)
        if kind == "latency":
            ax.set_yscale("log")
        ax.set_title(f"C={c}, {dtype}, {t} thread(s)", fontsize=9)
        ax.set_xlabel("input size N (N×N)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"3×3 layer {kind}: {machine['cpu']}", fontsize=10)
    save_png(fig, path)
    plt.close(fig)


def write_compare(rows: list[dict], out: str | Path, *, machine: dict) -> list[Path]:
    """``out.csv``, ``out.json``, ``out.md`` and two PNGs (latency and speedup vs size)."""
    out = Path(out)
    fields = list(rows[0])
    for r in rows:
        fields += [k for k in r if k not in fields]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    written = [atomic_write_text(out.with_suffix(".csv"), text.getvalue())]
    written.append(atomic_write_json(out.with_suffix(".json"), {"machine": machine, "rows": rows}))
    header = (
        f"Measured on {machine['cpu']} ({machine['arch']}, {machine['cores_usable']} usable "
        f"cores), LiteRT interpreter with XNNPACK, median of interleaved runs. 'theory ×' is "
        f"the MAC ratio to the standard convolution, 'measured ×' the latency ratio, "
        f"'realised' their quotient."
    )
    written.append(
        atomic_write_text(out.with_suffix(".md"), f"{header}\n\n{_compare_table(rows)}\n")
    )
    layers = [r for r in rows if r["scope"] == "layer"]
    if layers:
        for kind, key, ylabel in (("latency", "p50_ms", "median latency (ms)"),
                                  ("speedup", "measured_speedup", "speedup over standard conv")):  # fmt: skip
            written.append(out.with_name(f"{out.name}_{kind}.png"))
            _compare_plot(layers, kind, key, ylabel, machine, written[-1])
    return written


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points no other point beats on both lower latency and higher accuracy."""
    front = []
    for i, (lat, acc) in enumerate(points):
        dominated = any(
            (l2 <= lat and a2 >= acc) and (l2 < lat or a2 > acc)
            for j, (l2, a2) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return front


def write_report(rows: list[dict], out: str | Path) -> list[Path]:
    """Accuracy vs latency vs size: ``out.json``, ``out.md`` and ``out.png`` (Pareto marked)."""
    out = Path(out)
    points = [(r["p50_ms"], r["accuracy"]) for r in rows]
    front = set(pareto_front(points))
    for i, r in enumerate(rows):
        r["pareto"] = i in front
    written = [atomic_write_json(out.with_suffix(".json"), rows)]
    latency_cols = sorted({k for r in rows for k in r if k.startswith("p50_ms@")})
    latency_cols += sorted({k for r in rows for k in r if k.startswith("estimated_ms@")})
    table = format_table(
        ["experiment", "model", "mode", "accuracy", "size KB", "MACs", "p50 ms (host)",
         *[c.replace("p50_ms@", "p50 ms ").replace("estimated_ms@", "estimated ms ")
           for c in latency_cols], "Pareto"],
        [[r["experiment"], r["name"], r["mode"], r["accuracy"], r["size_bytes"] / 1024,
          r.get("macs"), r["p50_ms"], *[r.get(c) for c in latency_cols],
          "★" if r["pareto"] else ""] for r in rows],
        markdown=True,
    )  # fmt: skip
    note = ""
    if any(c.startswith("estimated_ms@") for c in latency_cols):
        note = ("\n'estimated ms T': 1 thread on T's core emulated (qemu instruction counts, "
                "llvm-mca cycles at T's clock (instructions on a 32-bit target), DRAM traffic "
                "of T's cache model; the emulated runtime is ai-edge-litert 2.0.2, tflite-runtime "
                "2.14 on a 32-bit target), not measured; 'p50 ms (host)' measured here, "
                "'p50 ms <board>' measured on that board.\n")  # fmt: skip
    written.append(atomic_write_text(out.with_suffix(".md"), table + "\n" + note))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sizes = [max(20.0, r["size_bytes"] / 4096) for r in rows]
    ax.scatter([p[0] for p in points], [p[1] for p in points], s=sizes, alpha=0.6)
    for r, (x, y) in zip(rows, points):
        ax.annotate(f"{r['experiment']}/{r['name']}", (x, y), fontsize=7,
                    xytext=(4, 2), textcoords="offset points")  # fmt: skip
    fx = sorted(points[i] for i in front)
    ax.plot([p[0] for p in fx], [p[1] for p in fx], "r--", label="Pareto front")
    ax.set_xlabel("median latency, 1 thread (ms)")
    ax.set_ylabel("test accuracy")
    ax.set_title("accuracy vs latency (marker area ∝ file size)")
    ax.grid(alpha=0.3)
    ax.legend()
    written.append(out.with_suffix(".png"))
    save_png(fig, written[-1])
    plt.close(fig)
    return written


def read_verify(path: Path) -> dict:
    """``export/verify.json`` read back and checked (mapping of model → its verification)."""
    from liteconv.device.errors import LiteconvError
    from liteconv.device.files import read_json

    data = read_json(path, "verification JSON")
    if not isinstance(data, dict):
        raise LiteconvError(
            f"{path}: expected a mapping of model name to results; rerun 'liteconv verify'"
        )
    for name, row in data.items():
        if not isinstance(row, dict) or not isinstance(row.get("mode"), str):
            raise LiteconvError(
                f"{path}: {name}: expected a mapping with a mode; rerun 'liteconv verify'"
            )
        for key in ("accuracy", "agreement"):
            value = row.get(key)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not 0 <= value <= 1
            ):
                raise LiteconvError(
                    f"{path}: {name}.{key}: expected a number in [0, 1], got {value!r}"
                )
        size = row.get("size_bytes")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise LiteconvError(f"{path}: {name}.size_bytes: expected a non-negative integer")
    return data


def load_bench_documents(paths) -> list[dict]:
    """Benchmark JSON documents (host or device) written by ``bench``, checked."""
    from liteconv.device.harness import read_result_document

    return [read_result_document(p) for p in paths]


def device_documents(run) -> list[Path]:
    """The device results fetched into a run (``RUN_DIR/device/*.json``), oldest first."""
    folder = run.file(DEVICE)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.json") if not p.name.startswith("."))


def report_rows(run_dirs, *, bench_docs=(), threads: int = 1, runs: int = 50,
                emulate=(), emulate_cache: str | Path = str(caches.EMULATE),
                echo=print) -> list[dict]:  # fmt: skip
    """One row per exported model: accuracy (verify.json), size, MACs, host latency, and
    the latency of the given benchmark documents (e.g. from a Raspberry Pi) and of those
    ``liteconv device run`` fetched into each run (``RUN_DIR/device/*.json``, newest wins);
    for each ``Target`` in ``emulate``, its estimated 1-thread latency
    (``estimated_ms@<target>``, ``liteconv.emulate``): host measured, board estimated and
    board measured side by side."""
    from liteconv.bench.latency import BoardMeasured, Emulated, HostTimed
    from liteconv.device.errors import LiteconvError
    from liteconv.device.harness import read_result_document, sidecar_for
    from liteconv.pipeline.run import Run

    rows, files = [], []
    merges = [(doc, None) for doc in bench_docs]
    for run_dir in run_dirs:
        run = Run.open(run_dir)
        verify = run.file(VERIFY_JSON)
        if not verify.is_file():
            raise LiteconvError(f"{run.path}: no export/verify.json; run 'liteconv export' first")
        experiment = run.manifest().get("experiment", run.path.parent.name)
        for name, v in read_verify(verify).items():
            path = run.file(EXPORT) / f"{name}.tflite"
            if not path.is_file():
                continue
            run.verify_artifact(f"{EXPORT}/{name}.tflite")
            side = sidecar_for(path)
            rows.append({"experiment": experiment, "name": name, "mode": v["mode"],
                         "accuracy": v["accuracy"], "agreement": v["agreement"],
                         "size_bytes": v["size_bytes"], "macs": side.get("macs"),
                         "file": str(path), "run": str(run.path)})  # fmt: skip
            files.append(path)
        merges += [(read_result_document(p), str(run.path)) for p in device_documents(run)]
    if not rows:
        raise LiteconvError("no exported models found in the given runs")
    sources = [("p50_ms", HostTimed(threads=threads, runs=runs))]
    sources += [(f"estimated_ms@{t.name}", Emulated(t, cache=emulate_cache)) for t in emulate]
    for key, source in sources:  # host measured, boards estimated: the same question
        for rec, row in zip(source.file_times(files, echo=echo), rows):
            row[key] = rec["p50_ms"]
    for doc, only_run in merges:  # boards measured: read from their documents, by name
        board = BoardMeasured(doc, threads=threads)
        mine = [row for row in rows if only_run in (None, row["run"])]
        got = board.named_times([(f"{r['experiment']}/{r['name']}", r["name"]) for r in mine])
        for row, rec in zip(mine, got):
            if rec is not None:
                row[f"p50_ms@{board.where}"] = rec["p50_ms"]
    return rows


def host_profile(run) -> list[dict] | None:
    """``RUN_DIR/profile.json`` (written by ``liteconv profile RUN_DIR``) as a list of
    per-mode profiles, checked; ``None`` when the run has not been profiled."""
    from liteconv.device.errors import LiteconvError
    from liteconv.device.files import read_json
    from liteconv.device.profile import check_profiles

    path = run.path / "profile.json"
    if not path.is_file():
        return None
    doc = read_json(path, "profile JSON")
    modes = doc.get("modes") if isinstance(doc, dict) else None
    if not isinstance(modes, dict):
        raise LiteconvError(
            f"{path}: modes: expected a mapping; rerun 'liteconv profile {run.path}'"
        )
    return check_profiles([{**r, "mode": m} if isinstance(r, dict) else r
                           for m, r in modes.items()], str(path))  # fmt: skip


def profile_sections(run_dirs, bench_docs=()) -> list[dict]:
    """Per run, mode and thread count: the time of every block on the host (the run's
    ``profile.json``) next to each board's (``bench.py --profile`` documents given with
    ``--bench`` or fetched into ``RUN_DIR/device/``). A board's profile joins a run when
    its blocks are the run's (by name), or when the run has no host profile."""
    from liteconv.device.harness import read_result_document
    from liteconv.pipeline.run import Run

    sections = []
    for run_dir in run_dirs:
        run = Run.open(run_dir)
        docs = list(bench_docs) + [read_result_document(p) for p in device_documents(run)]
        host = host_profile(run) or []
        host_blocks = {tuple(b["block"] for b in h["blocks"]) for h in host}
        boards = [(doc.get("where", "device"), p) for doc in docs for p in doc.get("profile", [])
                  if not host or tuple(b["block"] for b in p["blocks"]) in host_blocks]  # fmt: skip
        if not boards:
            continue
        keys = dict.fromkeys((p["mode"], p["threads"]) for _, p in boards)
        for mode, threads in keys:
            columns = [("host", h) for h in host if (h["mode"], h["threads"]) == (mode, threads)]
            columns += [(w, p) for w, p in boards if (p["mode"], p["threads"]) == (mode, threads)]
            order = columns[0][1]["blocks"]
            rows = [{"block": b["block"], "type": b.get("type", ""), "macs": b.get("macs")}
                    for b in order]  # fmt: skip
            summary = {}
            for label, prof in columns:
                times = {b["block"]: b["p50_ms"] for b in prof["blocks"]}
                for row in rows:
                    row[label] = times.get(row["block"])
                summary[label] = {k: prof.get(k) for k in
                                  ("whole_ms", "predicted_ms", "error_pct", "sum_ms")}  # fmt: skip
            sections.append({"run": str(run.path), "mode": mode, "threads": threads,
                             "columns": [label for label, _ in columns], "rows": rows,
                             "summary": summary, "host_profiled": bool(host)})  # fmt: skip
    return sections


def write_profile_report(sections: list[dict], out: str | Path) -> list[Path]:
    """``OUT_profile.json``, ``.md`` (a table per section: block, type, MACs, ms per
    machine, and each board's time over the host's) and ``.png`` (bars per block)."""
    out = Path(out)
    base = out.with_name(f"{out.name}_profile")
    written = [atomic_write_json(base.with_suffix(".json"), sections)]
    parts = ["# Per-block latency, host and boards", ""]
    for s in sections:
        cols = s["columns"]
        ratio_cols = [c for c in cols if c != "host"] if "host" in cols else []
        table = format_table(
            ["block", "type", "MACs", *[f"{c} ms" for c in cols],
             *[f"{c} ÷ host" for c in ratio_cols]],
            [[r["block"], r["type"], r["macs"], *[r.get(c) for c in cols],
              *[round(r[c] / r["host"], 2) if r.get(c) is not None and r.get("host") else None
                for c in ratio_cols]] for r in s["rows"]],
            markdown=True,
        )  # fmt: skip
        sums = "; ".join(
            f"{c}: whole {v['whole_ms']:.4f} ms, predicted {v['predicted_ms']:.4f} ms"
            + (f" ({v['error_pct']:+.1f} %)" if v.get("error_pct") is not None else "")
            for c, v in s["summary"].items()
        )
        parts += [f"## {s['run']}: {s['mode']}, {s['threads']} thread(s)", "", table, "", sums]
        if not s["host_profiled"]:
            parts.append(f"(no host column: run 'liteconv profile {s['run']}' first)")
        parts.append("")
    written.append(atomic_write_text(base.with_suffix(".md"), "\n".join(parts)))
    import numpy as np

    plt = pyplot()
    fig, axes = plt.subplots(1, len(sections), squeeze=False,
                             figsize=(5.5 * len(sections), 1.5 + 0.3 * max(len(s["rows"])
                                                                           for s in sections)))  # fmt: skip
    for ax, s in zip(axes[0], sections):
        ys = np.arange(len(s["rows"]))[::-1]
        height = 0.8 / len(s["columns"])
        for k, c in enumerate(s["columns"]):
            ms = [r[c] if r.get(c) else np.nan for r in s["rows"]]  # log axis: no zeros
            ax.barh(ys - k * height, ms, height=height, label=c)
        centre = ys - (len(s["columns"]) - 1) * height / 2
        ax.set_yticks(centre, [r["block"] for r in s["rows"]], fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("median latency (ms, log)")
        ax.set_title(f"{Path(s['run']).name}: {s['mode']}, {s['threads']} thread(s)", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    written.append(base.with_suffix(".png"))
    save_png(fig, written[-1])
    plt.close(fig)
    return written

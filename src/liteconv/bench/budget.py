"""``flatten --budget-ms``: choose per convolution keep / lvh1 / lvh2 / cp:R to meet a latency.

Each eligible convolution's profile block (the conv with the batch normalisation and
activation the converter fuses into it) is decomposed every candidate way on its own,
and each candidate is converted and timed at the block's real input shape, interleaved,
through ``liteconv profile``'s latency table (so asking again measures nothing). The
whole model's latency is predicted as in ``profile``: the sum of its blocks less one
per-invoke cost per extra block; a candidate replaces its block's time.

The choice is a multiple-choice knapsack, solved exactly by dynamic programming over the
time each candidate adds to its layer's fastest one, in steps of 1/2000 of the slack the
budget leaves over the fastest plan (rounded up, so a plan that fits in steps fits in
milliseconds, and the fastest plan fits whenever the budget allows it): the summed error
is smallest among the plans whose predicted latency meets the budget. The error is the
relative reconstruction error of the kernel, or, given ``fit_images`` (data-aware
decomposition), the relative error of the block's output after each candidate's factors
are fitted to the convolution's outputs on those images' real activations.

Example:
    >>> plan = plan_for_budget(model, 1.5, calibration=images, mode="int8")
    >>> plan.choices
    {'block2_conv': 'lvh2', 'block3_conv': 'cp:32', ...}
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from liteconv.bench import profile as prof
from liteconv.device import caches
from liteconv.device.errors import LiteconvError
from liteconv.device.tables import format_table
from liteconv.keras_layers.cost import layer_macs
from liteconv.keras_layers.data_aware import fit_to_outputs
from liteconv.keras_layers.decompose import eligible, flatten_model

STEPS = 2000


@dataclass(frozen=True)
class Budget:
    """``flatten --budget-ms``: the latency to meet, in which precision, at how many
    threads, on which target (its cores pinned here, or its emulated core with
    ``emulate``), with the latency table ``cache``. Checked when made (one-line errors)."""

    ms: float
    mode: str = "int8"
    threads: int = 1
    target: object = None  # a device.targets.Target, or None: this host
    emulate: bool = False
    cache: str | None = str(caches.LATENCY)

    def __post_init__(self) -> None:
        if not self.ms > 0:
            raise LiteconvError(f"--budget-ms {self.ms}: expected a positive number of ms")
        if self.mode not in prof.MODES:
            raise LiteconvError(f"--mode {self.mode!r}: choose from {', '.join(prof.MODES)}")
        if self.threads < 1:
            raise LiteconvError(f"--threads {self.threads}: expected at least 1")
        if self.emulate and (self.target is None or not self.target.core):
            raise LiteconvError("--emulate plans on a board's core: give --target T with a core "
                                "(e.g. --target raspberry-pi-4)")  # fmt: skip
        if self.emulate and self.threads != 1:
            raise LiteconvError("--emulate estimates 1 thread: drop --threads")

    @property
    def target_name(self) -> str:
        return self.target.name if self.target is not None else "host"

    def source(self):
        """Where this budget's latencies come from (``latency``): the target's emulated core
        with ``emulate``, else this CPU with the budget's threads and the target's cores."""
        from liteconv.bench.latency import Emulated, HostTimed

        if self.emulate:
            return Emulated(self.target)
        return HostTimed(threads=self.threads, target=self.target_name, cache=self.cache,
                         cores=self.target.cores if self.target is not None else None)  # fmt: skip

    def record(self) -> dict:
        """What the run's manifest keeps of it."""
        return {"ms": self.ms, "mode": self.mode, "threads": self.threads,
                "target": self.target_name, "emulated": self.emulate}  # fmt: skip


def candidates(layer, rank_ratios=(0.25, 0.5)) -> list[str]:
    """keep, lvh1, lvh2 and CP at ``rank_ratios`` of the output channels."""
    ranks = sorted({max(1, round(r * layer.filters)) for r in rank_ratios})
    return ["keep", "lvh1", "lvh2", *(f"cp:{r}" for r in ranks)]


@dataclass
class Plan:
    """The choice per convolution, what it predicts, and the whole table behind it."""

    budget_ms: float
    mode: str
    choices: dict[str, str]
    predicted_ms: float
    fastest_ms: float
    baseline_ms: float
    rows: list[dict] = field(default_factory=list)
    error_kind: str = "kernel error"  # or "output error" (data-aware)

    def table(self) -> str:
        picked = [r for r in self.rows if r["chosen"]]
        return format_table(
            ["layer", "choice", "block ms", "kept ms", f"rel. {self.error_kind}", "MACs"],
            [[r["layer"], r["choice"], r["ms"], r["keep_ms"], round(r["error"], 4), r["macs"]]
             for r in picked],
            markdown=True,
        )  # fmt: skip


def _choose(options: list[list[tuple[float, float]]], capacity_ms: float) -> list[int] | None:
    """Indices (one per layer) minimising the summed error with sum(ms) <= capacity.

    Exact in the time each option takes beyond its layer's fastest option, rounded up to
    1/STEPS of the slack (capacity less the fastest plan): the fastest plan always fits
    when the capacity allows it, and every plan returned fits in milliseconds.
    """
    floor = [min(ms for ms, _ in layer) for layer in options]
    slack = capacity_ms - sum(floor)
    if slack < 0:
        return None
    unit = slack / STEPS

    def weight(layer_index: int, ms: float) -> int:
        extra = ms - floor[layer_index]
        if extra <= 0:
            return 0
        return math.ceil(extra / unit - 1e-9) if unit > 0 else STEPS + 1

    inf = math.inf
    best = np.full(STEPS + 1, inf)
    best[0] = 0.0
    picks = []
    for i, layer in enumerate(options):
        new = np.full(STEPS + 1, inf)
        pick = np.full(STEPS + 1, -1)
        for j, (ms, err) in enumerate(layer):
            w = weight(i, ms)
            if w > STEPS:
                continue
            shifted = np.full(STEPS + 1, inf)
            shifted[w:] = best[: STEPS + 1 - w] + err
            better = shifted < new
            new[better], pick[better] = shifted[better], j
        best = new
        picks.append(pick)
    b = int(np.argmin(best))
    chosen = []
    for i in reversed(range(len(options))):
        j = int(picks[i][b])
        chosen.append(j)
        b -= weight(i, options[i][j][0])
    return chosen[::-1]


def plan_for_budget(
    model,
    budget_ms: float,
    *,
    calibration: np.ndarray,
    fit_images: np.ndarray | None = None,
    mode: str = "int8",
    source=None,
    echo=print,
) -> Plan:
    """The plan meeting ``budget_ms`` (predicted) with the least summed error: of the
    kernels, or with ``fit_images`` of the blocks' outputs after a data-aware fit. Every
    latency comes from ``source`` (``latency.HostTimed``, the default: timed on this CPU;
    ``latency.Emulated``: estimated on a board's emulated core).

    Raises:
        LiteconvError: no eligible convolution, or a budget below the fastest plan (the
            message names the fastest reachable latency).
    """
    from liteconv.bench.latency import HostTimed

    source = source or HostTimed()
    threads = source.threads
    if budget_ms <= 0:
        raise LiteconvError(f"--budget-ms {budget_ms}: expected a positive number of ms")
    model = prof.flat_model(model)  # once: profile and model_blocks would each inline it
    whole = source.profile(model, calibration=calibration, modes=[mode], echo=echo)[mode]
    blocks = prof.model_blocks(model)
    shared = sorted({b.layers[0].name for b in blocks if b.call > 0})
    if shared:  # one choice per layer would change every call of it at once
        echo(f"kept as they are, applied more than once: {', '.join(shared)}")
    targets = [(i, b) for i, b in enumerate(blocks)
               if eligible(b.layers[0]) and b.layers[0].name not in shared]  # fmt: skip
    if not targets:
        raise LiteconvError(f"{model.name}: no convolution to decompose (stock Conv2D, k ≥ 2)")
    acts = prof.block_activations(model, [b for _, b in targets], calibration)
    fit_acts = (prof.block_activations(model, [b for _, b in targets], fit_images)
                if fit_images is not None else [None] * len(targets))  # fmt: skip
    rows, todo = [], []
    echo(f"decomposing {len(targets)} convolution(s) every candidate way")
    for (i, block), act, fit_act in zip(targets, acts, fit_acts):
        layer = block.layers[0]
        base = prof.block_model(block)
        said = []
        for choice in candidates(layer):
            if choice == "keep":
                cand, err = base, 0.0
            else:
                try:
                    cand, report = flatten_model(base, plan={layer.name: choice})
                except np.linalg.LinAlgError:  # CP's ALS on a degenerate kernel (C_in = 1)
                    said.append(f"{choice} failed (singular), not a candidate")
                    continue
                if fit_act is None:
                    err = float(report[0]["rel_error"])
                else:
                    report = fit_to_outputs(base, cand, fit_act[0], report)
                    err = float(report[0]["output_error"])
                said.append(f"{choice} {err:.3f}")
            signature = {"candidate": prof.layer_signature(cand.layers),
                         "input": list(block.inputs[0].shape[1:])}  # fmt: skip
            row = {"layer": layer.name, "block": i, "choice": choice, "error": err,
                   "macs": sum(layer_macs(x) for x in cand.layers), "chosen": False}  # fmt: skip
            rows.append(row)
            if choice == "keep":
                row["ms"] = whole["blocks"][i]["p50_ms"]  # measured with the whole profile
            else:
                todo.append((row, cand, act[0], signature))
        kind = "output error (data-aware fit)" if fit_act is not None else "kernel error"
        echo(f"  {layer.name}: relative {kind} {', '.join(said)}")
    if todo:
        echo(f"{source.doing}: {len(todo)} candidate block(s) ({mode}, {threads} thread(s); "
             "a latency already known is not taken again)")  # fmt: skip
        timings = source.times([(cand, data) for _, cand, data, _ in todo], mode,
                               signatures=[sig for *_, sig in todo], echo=echo)  # fmt: skip
        for (row, *_), timing in zip(todo, timings):
            row["ms"] = timing["p50_ms"]
    by_layer: dict[str, list[dict]] = {}
    for row in rows:
        by_layer.setdefault(row["layer"], []).append(row)
    keep_ms = {name: opts[0]["ms"] for name, opts in by_layer.items()}
    for row in rows:
        row["keep_ms"] = keep_ms[row["layer"]]
    fixed = whole["predicted_ms"] - sum(keep_ms.values())  # the other blocks, less overhead
    fastest = fixed + sum(min(r["ms"] for r in opts) for opts in by_layer.values())
    options = [[(r["ms"], r["error"]) for r in opts] for opts in by_layer.values()]
    picks = _choose(options, budget_ms - fixed)
    if picks is None:
        raise LiteconvError(
            f"--budget-ms {budget_ms:g}: no plan reaches it; the fastest reachable is "
            f"{fastest:.4f} ms predicted ({mode}, {threads} thread(s); the model as it is: "
            f"{whole['predicted_ms']:.4f} ms)"
        )
    choices = {}
    for opts, j in zip(by_layer.values(), picks):
        opts[j]["chosen"] = True
        choices[opts[j]["layer"]] = opts[j]["choice"]
    predicted = fixed + sum(opts[j]["ms"] for opts, j in zip(by_layer.values(), picks))
    return Plan(budget_ms, mode, choices, round(predicted, 6), round(fastest, 6),
                whole["predicted_ms"], rows,
                "kernel error" if fit_images is None else "output error")  # fmt: skip


def budget_result(run) -> dict:
    """What a ``flatten --budget-ms`` run shows, from its manifest: the budget, the plan
    per layer with its reconstruction error and MACs, predicted against measured latency
    (the parent's and the new model's, timed side by side), and the accuracy at each
    step (parent, decomposed, BatchNorm re-estimated, each fine-tune epoch, final)."""
    manifest = run.manifest()
    flat = manifest.get("flatten") or {}
    budget = flat.get("budget")
    if not isinstance(budget, dict) or "measured_ms" not in budget:
        raise LiteconvError(
            f"{run.path}: not a finished 'liteconv flatten --budget-ms' run (no measured budget "
            "in its manifest)"
        )
    layers = {r["layer"]: r for r in flat.get("layers", []) if isinstance(r, dict)}
    plan = []
    for layer, choice in budget["plan"].items():
        r = layers.get(layer, {})
        plan.append({"layer": layer, "choice": choice, "rel_error": r.get("rel_error", 0.0),
                     "output_error": r.get("output_error"), "macs_before": r.get("macs_before"), "macs_after": r.get("macs_after")})  # fmt: skip
    from liteconv.device.machine import machine_info

    return {
        "run": str(run.path), "parent": manifest.get("parent"), "budget": budget,
        "plan": plan, "macs_before": flat.get("macs_before"), "macs_after": flat.get("macs_after"),
        "accuracy": {"parent": (manifest.get("parent") or {}).get("test_accuracy"),
                     "decomposed": flat.get("accuracy_decomposed"),
                     "bn_reestimated": flat.get("accuracy_bn_reestimated"),
                     "per_epoch": flat.get("test_accuracy_per_epoch", {}),
                     "final": (manifest.get("metrics") or {}).get("test_accuracy")},
        "fine_tune_epochs": flat.get("fine_tune_epochs"),
        "data_aware": bool(flat.get("data_aware")), "git_commit": manifest.get("git_commit"),
        "machine": machine_info(),
    }  # fmt: skip


def budget_markdown(result: dict) -> str:
    """The budget result as a page: plan table, latency line, accuracy line."""
    b, acc = result["budget"], result["accuracy"]

    def err(p, key):
        value = p.get(key)
        return round(value, 4) if p["choice"] != "keep" and value is not None else "-"

    table = format_table(
        ["layer", "choice", "rel. kernel error", "rel. output error", "MACs before", "MACs after"],
        [[p["layer"], p["choice"], err(p, "rel_error"), err(p, "output_error"),
          p["macs_before"] if p["choice"] != "keep" else "-",
          p["macs_after"] if p["choice"] != "keep" else "-"] for p in result["plan"]],
        markdown=True,
    )  # fmt: skip

    def pct(value) -> str:
        return f"{100 * value:.2f} %" if isinstance(value, (int, float)) else "-"

    epochs = ", ".join(f"{e}: {pct(a)}" for e, a in sorted(acc["per_epoch"].items(),
                                                            key=lambda kv: int(kv[0])))  # fmt: skip
    parent = result.get("parent") or {}
    return "\n".join([
        f"# Latency budget: {parent.get('experiment', 'parent')} under {b['ms']:g} ms "
        f"({b['mode']}, {b['threads']} thread(s))",
        "",
        f"`liteconv flatten {parent.get('run', 'PARENT')} --budget-ms {b['ms']:g} --mode "
        f"{b['mode']}` on {result['machine']['cpu']} (liteconv {(result.get('git_commit') or '?')[:12]}"
        f"); new run `{result['run']}`. Candidates per convolution: keep, lvh1, lvh2, CP at "
        "0.25 and 0.5 of the output channels, each timed as its block alone (the latency "
        "table); the choice is a multiple-choice knapsack minimising the summed relative "
        + ("output error (each candidate fitted to the layer's outputs on training images)"
           if result.get("data_aware") else "kernel error")
        + " under the predicted latency. Output errors: held-out training images, whole "
        "maps, before the activation, with the chosen layers below already decomposed.",
        "",
        table,
        "",
        f"- Predicted: {b['predicted_ms']:.4f} ms (parent {b['parent_predicted_ms']:.4f} ms, "
        f"fastest reachable {b['fastest_ms']:.4f} ms).",
        (f"- **Estimated** after fine-tuning on {b['estimated_on']}'s emulated core (both "
         "models, instruction counts and llvm-mca cycles at its clock; not measured): "
         if b.get("estimated_on") else
         "- Measured after fine-tuning, side by side in one run (200 runs each, median): ")
        + f"{b['measured_ms']:.4f} ms against the parent's {b['parent_measured_ms']:.4f} ms "
        f"({b['parent_measured_ms'] / b['measured_ms']:.2f}× faster): budget "
        f"**{'met' if b['met'] else 'NOT met'}**.",
        f"- MACs {result['macs_before']:,} → {result['macs_after']:,}.",
        f"- Test accuracy: parent {pct(acc['parent'])}; decomposed {pct(acc['decomposed'])}; "
        f"BatchNorm re-estimated {pct(acc['bn_reestimated'])}; per fine-tune epoch {epochs}; "
        f"final **{pct(acc['final'])}** after {result['fine_tune_epochs']} epoch(s).",
        "",
    ])  # fmt: skip


def write_budget_result(run, out: str | Path) -> list[Path]:
    """``out.json`` and ``out.md`` of a budget run (``flatten --budget-ms ... --result``)."""
    from liteconv.device.files import atomic_write_json, atomic_write_text

    result = budget_result(run)
    out = Path(out)
    return [atomic_write_json(out.with_suffix(".json"), result),
            atomic_write_text(out.with_suffix(".md"), budget_markdown(result))]  # fmt: skip

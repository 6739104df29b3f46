"""The latency of models on a target, asked in one place and answered by a source.

``HostTimed`` converts the models and times them here with the target's threads and cores
(interleaved; a latency table by block signature spares repeats); ``Emulated`` estimates
them on the target's emulated core (``liteconv.emulate``: 1 thread, cached by model hash).
``budget.plan_for_budget``, ``liteconv flatten --budget-ms``, ``liteconv profile`` and
``liteconv report`` take a source and never ask which one it is: ``profile`` gives
per-block tables, ``times`` the latency of Keras models (converted alike), ``file_times``
that of ``.tflite`` files. The third source, ``BoardMeasured``, is a latency measured on
the board itself (a result document from ``liteconv device run`` or the bundle's
``bench.py --json``): read, not timed, its models found by name.

Example:
    >>> source = Emulated(load_target("raspberry-pi-4"))
    >>> source.times([(model, images)], "int8")[0]["p50_ms"]   # estimated ms
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from liteconv.bench import profile as prof
from liteconv.device import caches
from liteconv.device.errors import LiteconvError


@dataclass
class HostTimed:
    """Timed on this CPU with ``threads`` (pinned to ``cores``) for ``target``'s profile."""

    threads: int = 1
    runs: int = 100
    warmup: int = 10
    cores: list[int] | None = None
    target: str = "host"
    cache: str | Path | None = str(caches.LATENCY)
    refresh: bool = False  # time again what the latency table holds

    @property
    def doing(self) -> str:
        return "timing"

    @property
    def done(self) -> str:
        return "measured"

    @property
    def board(self):
        return None

    @property
    def title(self) -> str:
        return f"per-block latency, {self.threads} thread(s)"

    def profile(self, model, *, calibration, modes, echo=print, progress=None) -> dict:
        """``{mode: profile}`` of ``model`` (``profile.profile_model``: every block and the
        whole model timed interleaved), through the latency table."""
        return prof.profile_model(model, calibration=calibration, modes=list(modes),
                                  threads=self.threads, runs=self.runs, warmup=self.warmup,
                                  cores=self.cores, target=self.target, cache=self.cache,
                                  refresh=self.refresh, progress=progress, echo=echo)  # fmt: skip

    def times(self, items: list, mode: str, *, signatures: list[dict] | None = None,
              runs: int | None = None, warmup: int | None = None, echo=print) -> list[dict]:  # fmt: skip
        """``{"p50_ms", ...}`` of each ``(keras_model, calibration)``; with ``signatures``
        those already in the latency table are read from it, the rest timed and added."""
        table = prof.LatencyTable(self.cache, self.target) if self.cache and signatures else None
        keys = ([prof.LatencyTable.key(s, mode, self.threads) for s in signatures]
                if table is not None else [None] * len(items))  # fmt: skip
        out = [table.entries.get(k) if table is not None else None for k in keys]
        todo = [i for i, got in enumerate(out) if got is None]
        if todo:
            timed = prof.time_models([items[i] for i in todo], mode, threads=self.threads,
                                     runs=runs or self.runs, warmup=warmup or self.warmup,
                                     cores=self.cores)  # fmt: skip
            for i, timing in zip(todo, timed):
                out[i] = timing
                if table is not None:
                    table.entries[keys[i]] = timing
            if table is not None:
                table.save()
        return out

    def file_times(self, paths: list, *, runs: int | None = None, echo=print) -> list[dict]:
        """``{"p50_ms", ...}`` of each ``.tflite`` in ``paths``, timed here interleaved
        with the source's threads and cores."""
        from liteconv.device.harness import benchmark

        with prof.pin_cores(self.cores):
            records = benchmark([str(p) for p in paths], threads=[self.threads],
                                runs=runs or self.runs, warmup=self.warmup)  # fmt: skip
        return [{"p50_ms": r["p50_ms"], "mean_ms": r["mean_ms"], "runs": r["runs"]}
                for r in records]  # fmt: skip


@dataclass
class Emulated:
    """Estimated on ``board``'s emulated core (``threads``: 1, or one of the board's
    thread counts; its DRAM term)."""

    board: object  # a device.targets.Target with a core
    cache: str | Path = str(caches.EMULATE)
    threads: int = 1

    @property
    def doing(self) -> str:
        return f"estimating on {self.board.core}"

    @property
    def done(self) -> str:
        return f"estimated on {self.board.name}"

    @property
    def title(self) -> str:
        return f"per-block latency estimated for {self.board.name} ({self.board.core}), 1 thread"

    def profile(self, model, *, calibration, modes, echo=print, progress=None) -> dict:
        """``{mode: profile}`` as ``HostTimed.profile`` gives it, every block, the whole
        model and the one-RELU model (the per-invoke cost) estimated instead of timed (1
        thread, with the board's DRAM term); each carries ``emulated`` (target, core, clock,
        runtime). ``progress`` does not apply (nothing is timed)."""
        from liteconv.emulate.estimate import cycles_source, emulated_runtime

        blocks = prof.model_blocks(model)
        if not blocks:
            raise LiteconvError(f"{model.name}: no layers to profile")
        for mode in modes:
            if mode not in prof.MODES:
                raise LiteconvError(f"--mode {mode!r}: choose from {', '.join(prof.MODES)}")
        acts = prof.block_activations(model, blocks, calibration) if "int8" in modes else None
        call_data = np.linspace(-1, 1, 64, dtype="float32")[:, None]
        board = self.board
        results = {}
        for mode in modes:
            items = []
            for i, block in enumerate(blocks):
                data = acts[i] if acts is not None else None
                items.append((prof.block_model(block),
                              data[0] if data is not None and len(data) == 1 else data))  # fmt: skip
            items += [(model, calibration), (prof.call_model(), call_data)]
            est = [r["p50_ms"] for r in self.times(items, mode, echo=echo)]
            result = prof.summarise([prof.block_row(b) for b in blocks], est[:-2], est[-2],
                                    est[-1], threads=1, measured=0)  # fmt: skip
            result["emulated"] = {"target": board.name, "core": board.core,
                                  "clock_mhz": board.clock_mhz, "runtime": emulated_runtime(board),
                                  "cycles": cycles_source(board)}  # fmt: skip
            results[mode] = result
        return results

    def times(self, items: list, mode: str, *, signatures: list[dict] | None = None,
              runs: int | None = None, warmup: int | None = None, echo=print) -> list[dict]:  # fmt: skip
        """Estimated ``{"p50_ms", ...}`` of each ``(keras_model, calibration)``, converted
        as ``HostTimed`` converts them (cached by the file's hash; ``signatures``, ``runs``
        and ``warmup`` do not apply). A model whose emulated outputs differ from the
        host's is an error (no estimate would be honest)."""
        with prof.converted(items, mode) as paths:
            out = self.file_times(paths, echo=echo)
        for (model, _), rec in zip(items, out):
            if rec["p50_ms"] is None:
                raise LiteconvError(f"{model.name} ({mode}): {rec['why']}: no estimate")
        return out

    def file_times(self, paths: list, *, runs: int | None = None, echo=print) -> list[dict]:
        """Estimated ``{"p50_ms", "estimated", "instructions_per_invoke"}`` of each
        ``.tflite`` in ``paths`` at the source's threads; ``p50_ms`` None (with ``why``)
        where the emulated outputs differ from the host's."""
        from liteconv.emulate.estimate import estimate_models

        records = estimate_models([str(p) for p in paths], self.board, cache=self.cache,
                                  echo=echo)  # fmt: skip
        out = []
        for rec in records:
            ms = (rec["estimated_ms"] if self.threads == 1
                  else rec["estimated_ms_threads"][str(self.threads)])  # fmt: skip
            entry = {"p50_ms": ms, "estimated": True,
                     "instructions_per_invoke": rec["instructions_per_invoke"]}  # fmt: skip
            if rec.get("error"):
                entry["why"] = (f"{rec['runtime']} cannot run it under emulation "
                                f"({rec['error']})")  # fmt: skip
            elif ms is None:
                entry["why"] = (f"its emulated outputs on {self.board.core} differ from the "
                                f"host's (max |diff| {rec['check']['max_abs_diff']:.3g})")  # fmt: skip
            out.append(entry)
        return out


@dataclass
class BoardMeasured:
    """Measured on the board itself: a result document (``liteconv device run``, the
    bundle's ``bench.py --json``), read rather than timed; ``threads``: which of its
    records count."""

    document: dict
    threads: int = 1

    @property
    def where(self) -> str:
        """The board's label in the document (``device`` when it gives none)."""
        return self.document.get("where", "device")

    @property
    def done(self) -> str:
        return f"measured on {self.where}"

    def named_times(self, names: list[tuple[str, ...]]) -> list[dict | None]:
        """For each model, given as the names it may go by (``experiment/name``, ``name``),
        its record at the source's threads (``{"p50_ms", ...}``; the XNNPACK one where the
        document also has one without), or None if the document has none."""
        found: dict[str, dict] = {}
        for r in self.document.get("records", []):
            if r.get("threads") != self.threads:
                continue
            have = found.get(r["model"])
            if have is None or (r.get("xnnpack", True) and not have.get("xnnpack", True)):
                found[r["model"]] = r
        return [next((found[n] for n in aliases if n in found), None) for aliases in names]

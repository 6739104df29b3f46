"""The latency of models on a target, asked in one place and answered by a source.

``HostTimed`` converts the models and times them here with the target's threads and cores
(interleaved; a latency table by block signature spares repeats); ``Emulated`` estimates
them on the target's emulated core (``liteconv.emulate``: 1 thread, cached by model hash).
``budget.plan_for_budget`` and ``liteconv flatten --budget-ms`` take a source and never ask
which one it is. (A latency measured on the board itself comes back from ``liteconv device
run`` as a result document, which ``report`` reads beside these.)

Example:
    >>> source = Emulated(load_target("raspberry-pi-4"))
    >>> source.times([(model, images)], "int8")[0]["p50_ms"]   # estimated ms
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from liteconv.bench import profile as prof
from liteconv.device import caches


@dataclass
class HostTimed:
    """Timed on this CPU with ``threads`` (pinned to ``cores``) for ``target``'s profile."""

    threads: int = 1
    runs: int = 100
    warmup: int = 10
    cores: list[int] | None = None
    target: str = "host"
    cache: str | Path | None = str(caches.LATENCY)

    @property
    def doing(self) -> str:
        return "timing"

    @property
    def done(self) -> str:
        return "measured"

    @property
    def board(self):
        return None

    def profile(self, model, *, calibration, mode: str, echo=print) -> dict:
        """``profile.profile_model`` of ``model`` in ``mode``, through the latency table."""
        return prof.profile_model(model, calibration=calibration, modes=[mode],
                                  threads=self.threads, runs=self.runs, warmup=self.warmup,
                                  cores=self.cores, target=self.target, cache=self.cache,
                                  echo=echo)[mode]  # fmt: skip

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


@dataclass
class Emulated:
    """Estimated on ``board``'s emulated core (1 thread, its DRAM term)."""

    board: object  # a device.targets.Target with a core
    cache: str | Path = str(caches.EMULATE)
    threads: int = 1

    @property
    def doing(self) -> str:
        return f"estimating on {self.board.core}"

    @property
    def done(self) -> str:
        return f"estimated on {self.board.name}"

    def profile(self, model, *, calibration, mode: str, echo=print) -> dict:
        """``profile.emulated_profile`` of ``model`` in ``mode``."""
        return prof.emulated_profile(model, calibration=calibration, target=self.board,
                                     modes=[mode], cache=self.cache, echo=echo)[mode]  # fmt: skip

    def times(self, items: list, mode: str, *, signatures: list[dict] | None = None,
              runs: int | None = None, warmup: int | None = None, echo=print) -> list[dict]:  # fmt: skip
        """Estimated ``{"p50_ms", ...}`` of each ``(keras_model, calibration)`` (cached by
        the converted file's hash; ``signatures``, ``runs`` and ``warmup`` do not apply)."""
        return prof.estimate_models_on(items, mode, self.board, cache=self.cache, echo=echo)

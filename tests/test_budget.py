"""`flatten --budget-ms`: the knapsack choice, the plan, an impossible budget."""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from liteconv.bench import budget as bud
from liteconv.bench.latency import HostTimed
from liteconv.cli import cli
from liteconv.compat import keras
from liteconv.device.errors import LiteconvError
from liteconv.keras_layers import create_model


def test_knapsack_matches_exhaustive_search():
    rng = np.random.default_rng(0)
    for _ in range(40):
        layers = [[(float(ms), float(err)) for ms, err in
                   zip(rng.uniform(0.1, 1.0, 4), [0.0, *rng.uniform(0, 1, 3)])]
                  for _ in range(rng.integers(1, 5))]  # fmt: skip
        cap = float(rng.uniform(0.2, 3.0))
        # the DP's promise: optimal among plans whose time beyond each layer's fastest
        # option, rounded up to 1/STEPS of the slack over the fastest plan, fits
        floor = [min(ms for ms, _ in x) for x in layers]
        unit = (cap - sum(floor)) / bud.STEPS
        best = None
        for combo in itertools.product(*[range(len(x)) for x in layers]):
            if unit < 0:
                break
            steps = sum(math.ceil((layers[i][j][0] - floor[i]) / unit - 1e-9)
                        for i, j in enumerate(combo))  # fmt: skip
            err = sum(layers[i][j][1] for i, j in enumerate(combo))
            if steps <= bud.STEPS and (best is None or err < best[0]):
                best = (err, combo)
        got = bud._choose(layers, cap)
        if best is None:
            assert got is None
            continue
        assert sum(layers[i][j][0] for i, j in enumerate(got)) <= cap + 1e-9
        assert sum(layers[i][j][1] for i, j in enumerate(got)) == pytest.approx(best[0])


@pytest.mark.large
def test_plan_keeps_everything_for_a_loose_budget_and_names_the_fastest(tmp_path):
    keras.utils.set_random_seed(0)
    model = create_model("baseline_cnn", input_shape=(12, 12, 1), num_classes=3, width=0.25)
    images = np.random.default_rng(0).uniform(size=(16, 12, 12, 1)).astype("float32")
    kw = dict(calibration=images, mode="fp32", echo=lambda *_: None,
              source=HostTimed(runs=3, warmup=0, cache=tmp_path))  # fmt: skip
    loose = bud.plan_for_budget(model, 1e3, **kw)
    assert set(loose.choices.values()) == {"keep"} and loose.predicted_ms == pytest.approx(
        loose.baseline_ms)  # fmt: skip
    layers = {r["layer"] for r in loose.rows}
    assert len(layers) == 5  # keep, lvh1, lvh2, 2 CP ranks (CP fails on the C_in = 1 conv)
    assert 5 * 5 - 2 <= len(loose.rows) <= 5 * 5
    assert all(r["error"] == 0 for r in loose.rows if r["choice"] == "keep")
    # rank 1 per filter never reproduces a random kernel; CP at a rank at least the
    # kernel's own (the 3x3x1 first conv: rank <= 9) may reproduce it exactly
    assert all(0 < r["error"] < 1 for r in loose.rows if r["choice"].startswith("lvh"))
    assert all(0 <= r["error"] < 1 for r in loose.rows if r["choice"].startswith("cp"))
    # the fastest plan is reachable exactly; just below it is not (and says how fast)
    fastest = bud.plan_for_budget(model, loose.fastest_ms * 1.001, **kw)
    assert fastest.predicted_ms <= loose.fastest_ms * 1.001
    with pytest.raises(LiteconvError, match=f"fastest reachable is {loose.fastest_ms:.4f} ms"):
        bud.plan_for_budget(model, loose.fastest_ms * 0.9, **kw)


@pytest.mark.large
def test_impossible_budget_exits_2_and_a_reachable_one_is_measured(run_copy, tmp_path):
    result = CliRunner().invoke(cli, ["flatten", str(run_copy), "--budget-ms", "0.00001",
                                      "--mode", "fp32", "--out", str(tmp_path / "runs"),
                                      "--cache", str(tmp_path / "cache")])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "no plan reaches it; the fastest reachable is" in result.output
    assert not (tmp_path / "runs").exists()  # nothing written
    # a reachable budget: decomposed per the plan, fine-tuned, measured, result page
    fastest = float(re.search(r"fastest reachable is ([0-9.]+) ms", result.output).group(1))
    budget = round(fastest * 1.02, 6)
    ok = CliRunner().invoke(cli, ["flatten", str(run_copy), "--budget-ms", str(budget),
                                  "--mode", "fp32", "--epochs", "1", "--out",
                                  str(tmp_path / "runs"), "--cache", str(tmp_path / "cache"),
                                  "--result", str(tmp_path / "budget")])  # fmt: skip
    assert ok.exit_code == 0, ok.output
    doc = json.loads((tmp_path / "budget.json").read_text())
    manifest = json.loads((Path(doc["run"]) / "manifest.json").read_text())
    b = manifest["flatten"]["budget"]
    assert doc["budget"] == b and b["ms"] == budget and b["predicted_ms"] <= budget
    assert b["met"] == (b["measured_ms"] <= budget)
    decomposed = {r["layer"] for r in manifest["flatten"]["layers"]}
    assert decomposed == {k for k, v in b["plan"].items() if v != "keep"}
    assert doc["accuracy"]["final"] == manifest["metrics"]["test_accuracy"]
    md = (tmp_path / "budget.md").read_text()
    assert f"{b['measured_ms']:.4f} ms" in md and ("**met**" in md) == b["met"]
    wrong = CliRunner().invoke(cli, ["flatten", str(run_copy), "--result", "x"])
    assert wrong.exit_code == 2 and "give --budget-ms too" in wrong.output


def test_a_budget_is_checked_when_made_and_names_its_source():
    """flatten --budget-ms's settings in one typed place: a bad one is a one-line error
    naming the flag; an emulated budget asks the board's core, a host one this CPU."""
    from liteconv.bench.budget import Budget
    from liteconv.bench.latency import Emulated
    from liteconv.device.targets import load_target

    with pytest.raises(LiteconvError, match="--budget-ms 0: expected a positive"):
        Budget(0)
    with pytest.raises(LiteconvError, match="--mode 'int4'"):
        Budget(1.0, mode="int4")
    with pytest.raises(LiteconvError, match="--emulate plans on a board's core"):
        Budget(1.0, emulate=True)
    pi4 = load_target("raspberry-pi-4")
    with pytest.raises(LiteconvError, match="--emulate estimates 1 thread"):
        Budget(1.0, emulate=True, target=pi4, threads=4)
    board = Budget(1.0, emulate=True, target=pi4).source()
    assert isinstance(board, Emulated) and board.board is pi4
    host = Budget(2.5, mode="fp32", threads=2, target=pi4).source()
    assert isinstance(host, HostTimed) and (host.threads, host.cores) == (2, pi4.cores)
    assert host.target == "raspberry-pi-4"
    assert Budget(2.5, threads=2).record() == {"ms": 2.5, "mode": "int8", "threads": 2,
                                               "target": "host", "emulated": False}  # fmt: skip


def test_a_board_measured_document_answers_by_name_at_its_threads():
    """The third latency source reads a board's result document: a model by any of its
    names, the record at the asked threads, the XNNPACK one where both are there."""
    from liteconv.bench.latency import BoardMeasured

    doc = {"where": "pi5", "records": [
        {"model": "exp/int8", "threads": 1, "xnnpack": False, "p50_ms": 9.0},
        {"model": "exp/int8", "threads": 1, "xnnpack": True, "p50_ms": 3.0},
        {"model": "exp/int8", "threads": 4, "xnnpack": True, "p50_ms": 1.0},
        {"model": "fp32", "threads": 1, "xnnpack": True, "p50_ms": 5.0}]}  # fmt: skip
    board = BoardMeasured(doc)
    got = board.named_times([("exp/int8", "int8"), ("exp/fp32", "fp32"), ("exp/qat", "qat")])
    assert [g and g["p50_ms"] for g in got] == [3.0, 5.0, None]
    assert BoardMeasured(doc, threads=4).named_times([("exp/int8",)])[0]["p50_ms"] == 1.0
    assert board.where == "pi5" and BoardMeasured({}).where == "device"

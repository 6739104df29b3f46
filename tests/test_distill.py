"""Knowledge distillation: the loss against a hand computation, and a distilled fine-tune
that resumes with its teacher."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import DIGITS, quiet
from liteconv.bench import flatten_run as fr
from liteconv.config import load_config
from liteconv.pipeline.distill import DistillationLoss
from liteconv.pipeline.train import train


def _softmax_t(p, t):
    z = np.log(p) / t
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_distillation_loss_matches_a_hand_computation():
    labels = np.array([[0, 1, 0], [1, 0, 0]], np.float32)
    teacher = np.array([[0.2, 0.7, 0.1], [0.5, 0.3, 0.2]], np.float32)
    student = np.array([[0.1, 0.6, 0.3], [0.3, 0.3, 0.4]], np.float32)
    t, alpha = 3.0, 0.25
    ce = -np.log((labels * student).sum(-1))
    pt, ps = _softmax_t(teacher, t), _softmax_t(student, t)
    kl = (pt * (np.log(pt) - np.log(ps))).sum(-1)
    expected = ((1 - alpha) * ce + alpha * t**2 * kl).mean()
    loss = DistillationLoss(3, temperature=t, alpha=alpha)
    got = float(loss(np.concatenate([labels, teacher], -1), student))
    assert got == pytest.approx(expected, rel=1e-5)
    # plain labels (evaluation): the cross-entropy alone; a perfect teacher copy adds no KL
    assert float(loss(labels, student)) == pytest.approx(ce.mean(), rel=1e-5)
    same = float(loss(np.concatenate([labels, student], -1), student))
    assert same == pytest.approx((1 - alpha) * ce.mean(), rel=1e-4)


def test_an_interrupted_distilled_fine_tune_resumes_with_its_teacher(tmp_path, monkeypatch):
    cfg = load_config(DIGITS, {"model.name": "baseline_cnn", "model.kwargs.width": 0.5,
                               "train.epochs": 2, "train.verbose": 0})  # fmt: skip
    parent = train(cfg, out=tmp_path / "parent", echo=quiet).path
    original = fr.TestAccuracyPerEpoch.on_epoch_end

    def stop_after_first(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch == 0:
            raise KeyboardInterrupt  # as Ctrl-C would, after epoch 1 was backed up

    monkeypatch.setattr(fr.TestAccuracyPerEpoch, "on_epoch_end", stop_after_first)
    args = {"epochs": 2, "out": tmp_path, "temperature": 2.0, "distill_alpha": 0.7}
    with pytest.raises(KeyboardInterrupt):
        fr.flatten_run(parent, echo=quiet, **args)
    monkeypatch.setattr(fr.TestAccuracyPerEpoch, "on_epoch_end", original)
    lines: list[str] = []
    run = fr.flatten_run(parent, echo=lines.append, **args)
    text = "\n".join(lines)
    assert "resuming the interrupted fine-tune" in text
    assert "distilling from teacher.keras" in text and "temperature 2, alpha 0.7" in text
    manifest = json.loads((run.path / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["flatten"]["distill"] == {"teacher": "teacher.keras", "temperature": 2.0,
                                              "alpha": 0.7}  # fmt: skip
    assert sorted(manifest["flatten"]["test_accuracy_per_epoch"]) == ["1", "2"]
    epochs = [ln.split(",")[0] for ln in (run.path / "history.csv").read_text().splitlines()[1:]]
    assert epochs == ["0", "1"]  # one row per epoch: the second session ran epoch 2 only
    assert (run.path / "teacher.keras").is_file()


def test_study_variants_name_their_levers():
    from liteconv.device.errors import LiteconvError
    from liteconv.studies.flatten_study import parse_variant

    assert parse_variant("cp0.5") == {"method": "cp", "rank_ratio": 0.5, "distill": False,
                                      "data_aware": False, "warmup_epochs": 0}  # fmt: skip
    assert parse_variant("lvh1+da+kd+wu+slow") == {"method": "lvh", "stages": 1, "distill": True,
                                                   "data_aware": True, "warmup_epochs": 1,
                                                   "lr_fraction": 0.1}  # fmt: skip
    assert parse_variant("cp0.5+da+lr0.01")["lr_fraction"] == 0.01
    for bad in ("cp16+lr2", "cp16+lrx", "cp16+slow+lr0.5"):
        with pytest.raises(LiteconvError, match="unknown lever"):
            parse_variant(bad)
    with pytest.raises(LiteconvError, match="unknown lever 'xx'"):
        parse_variant("cp16+xx")

import dataclasses

import pytest
import torch

from kr.config import TrainConfig
from kr.data import load_dataset
from kr.models import build_model
from kr.train import fit_classifier, score


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _fit(data, cfg, seed=0, state_path=None):
    torch.manual_seed(seed)
    model = build_model("resnet8", 1, 10, width=8)
    result = fit_classifier(model, data.train, data.val, data.task, cfg, seed, hflip=False,
                            state_path=state_path)
    return model, result


CFG = TrainConfig(epochs=3, batch_size=64, lr=0.05, warmup_epochs=0)


def test_learns_and_selects_on_validation(digits):
    model, result = _fit(digits, CFG)
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0]
    assert result.best_val["acc"] == max(h["val_acc"] for h in result.history)
    assert score(model, digits.val, digits.task) == pytest.approx(result.best_val)
    assert score(model, digits.test, digits.task)["acc"] > 0.3  # chance is 0.1


def test_same_seed_same_numbers(digits):
    cfg = dataclasses.replace(CFG, epochs=1)
    _, a = _fit(digits, cfg)
    _, b = _fit(digits, cfg)
    _, c = _fit(digits, cfg, seed=1)
    assert a.history == b.history
    assert a.history != c.history


def test_resume_replays_exactly(digits, tmp_path):
    """An interrupted run resumed from its state file ends exactly where an uninterrupted one does."""
    full_model, full = _fit(digits, CFG)
    state = tmp_path / "state.pt"
    short = CFG
    torch.manual_seed(0)
    model = build_model("resnet8", 1, 10, width=8)

    class Stop(Exception):
        pass

    def stop_after_first(record):
        if record["epoch"] == 1:
            raise Stop

    with pytest.raises(Stop):  # interrupted during epoch 1: the state holds epoch 0
        fit_classifier(model, digits.train, digits.val, digits.task, short, 0, False,
                       state_path=state, on_epoch=stop_after_first)
    assert torch.load(state, weights_only=True)["epoch"] == 0
    resumed_model, resumed = _fit(digits, short, state_path=state)
    assert [h["val_acc"] for h in resumed.history] == [h["val_acc"] for h in full.history]
    x = digits.val.images[:8]
    assert torch.allclose(resumed_model(x), full_model.eval()(x))


def test_divergence_is_reported(digits):
    from kr.errors import KRError

    with pytest.raises(KRError, match="lower the learning rate"):
        _fit(digits, dataclasses.replace(CFG, epochs=1, lr=1e12, weight_decay=0))


def test_inference_chunks_change_only_the_speed(digits):
    """Evaluation, the judge and the audit run inference in chunks of EVAL_BATCH for speed; the
    numbers must not depend on the chunk size, or an audit's scores would depend on it."""
    from kr.privacy import signals
    from kr.train import EVAL_BATCH, predict_proba
    model, _ = _fit(digits, dataclasses.replace(CFG, epochs=1))
    images = digits.train.images[:600]  # a remainder at every chunk size
    probs = {b: predict_proba(model, images, False, batch_size=b) for b in (64, EVAL_BATCH, 512)}
    assert probs[64].shape == (600, 10)
    assert all((p == probs[512]).all() for p in probs.values())
    qs = signals.queries(2, True)
    logits = {b: signals.query(model, images, qs, batch_size=b) for b in (64, EVAL_BATCH, 512)}
    assert logits[512].shape == (600, len(qs), 10)
    assert all((q == logits[512]).all() for q in logits.values())

"""The generator registry (kr.generators.BACKENDS): a backend registered alone — a class, no
edit anywhere else — is a valid `generator.kind`, trains, is judged, selected, tuned and
distilled by the tiny pipeline, reloads from its checkpoint and offers its knob to `kr sample`."""

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from kr import generators, pipeline
from kr.config import load_config
from kr.generators import ConditionalGenerator


class ClassMeans(ConditionalGenerator):
    """A toy backend: one learnt image per class, plus `blur`-scaled noise."""
    kind = "means"
    knobs = {"sigma": (float, "noise scale"), "blur": (float, "toy knob")}
    tuned_knob = "sigma"      # tuned over select.sigma

    def build(self) -> nn.Module:
        module = nn.Module()
        module.means = nn.Parameter(torch.zeros(self.n_classes, self.channels, self.size, self.size))
        return module

    def make_optimizers(self):
        return {"model": torch.optim.Adam(self.model.parameters(), 0.05)}

    def train_step(self, real, g):
        x, y = real()
        loss = (self.model.means[y] - x).pow(2).mean()
        self.opts["model"].zero_grad()
        loss.backward()
        self.opts["model"].step()
        return {"loss": loss.item()}

    def sample_batch(self, labels, noise, sigma=1.0, blur=0.0):
        c = self.channels
        return self.ema.means[labels] + 0.2 * sigma * noise(c, self.size, self.size)


@pytest.mark.slow  # end to end: a whole tiny run
def test_a_backend_registered_alone_runs_through_the_pipeline(tmp_path, monkeypatch):
    monkeypatch.setitem(generators.BACKENDS, "means", ClassMeans)
    config = load_config("tiny", overrides=["generator.kind=means", "baselines=synthetic"])
    results = pipeline.run(config, out=tmp_path / "run", device="cpu")
    assert results["generator"]["kind"] == "means"
    assert results["tuning"]["knob"] == "sigma" and len(results["generator"]["quality"]["checkpoints"]) == 2
    assert {"kr", "synthetic"} <= set(results["methods"])
    ckpt = tmp_path / "run" / "generator" / "checkpoints" / results["selection"]["selected"]
    gen = generators.load_generator(ckpt)
    assert isinstance(gen, ClassMeans) and gen.sample([0, 1], 0, blur=1.0).shape == (2, 1, 28, 28)
    # its knobs are `kr sample` options (the CLI builds them from the registry when imported)
    import importlib

    from kr import cli

    fresh = importlib.reload(cli)
    out = tmp_path / "s.png"
    result = CliRunner().invoke(fresh.cli, ["sample", str(tmp_path / "run"), "--blur", "0.5", "--n", "4",
                                            "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert out.is_file()
    monkeypatch.undo()
    importlib.reload(cli)

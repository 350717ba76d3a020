"""The cGAN's own pieces: the lean architecture and MSGAN's mode-seeking term."""

import torch

from kr.config import load_config
from kr.generators import build_generator
from kr.generators.gan import mode_seeking
from kr.seeding import make_generator


def test_mode_seeking_known_answers():
    z1, z2 = torch.zeros(4, 8), torch.ones(4, 8)           # latent distance 1 per pair
    x = torch.zeros(4, 1, 5, 5)
    assert abs(mode_seeking(x, x + 0.5, z1, z2).item() - 2.0) < 1e-3        # 1 / (0.5 / 1)
    assert mode_seeking(x, x + 2.0, z1, z2) < mode_seeking(x, x + 0.5, z1, z2)  # apart = lower loss
    assert mode_seeking(x, x, z1, z2) > 1e4                  # collapse: as large as it gets


def test_mode_seeking_pairs_share_their_class():
    cfg = load_config("tiny", overrides=["generator.gan.arch=lean", "generator.gan.mode_seeking=1",
                                         "generator.batch_size=8"]).generator
    gen = build_generator(cfg, 1, 28, 4)
    gen.opts = gen.make_optimizers()
    seen = []
    forward = gen.model.forward
    gen.model.forward = lambda z, y: (seen.append(y.clone()), forward(z, y))[1]
    x, y = torch.randn(8, 1, 28, 28).clamp(-1, 1), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    losses = gen.train_step(lambda: (x, y[torch.randperm(8)]), make_generator(0))
    g_labels = seen[-1]                                      # the generator step's labels
    assert torch.equal(g_labels[:4], g_labels[4:]) and losses["mode_seeking"] > 0


def test_lean_generator_is_the_cheaper_one():
    """The lean architecture does its arithmetic at lower resolution: fewer multiply-adds per
    image than the residual one at the same width (counted on the convolutions)."""
    def macs(arch):
        cfg = load_config("cpu", overrides=[f"generator.gan.arch={arch}"]).generator
        gen = build_generator(cfg, 1, 28, 10)
        total = []

        def count(module, inputs, output):
            if isinstance(module, torch.nn.ConvTranspose2d):  # weight: in × out × k × k, per input pixel
                total.append(inputs[0][0].numel() * module.weight[0].numel())
            else:                                             # weight: out × in × k × k, per output pixel
                total.append(output[0].numel() * module.weight[0].numel())
        for m in gen.model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                m.register_forward_hook(count)
        gen.model.eval()(torch.randn(2, cfg.gan.z_dim), torch.tensor([0, 1]))
        return sum(total)
    assert macs("lean") < macs("resnet") / 1.5

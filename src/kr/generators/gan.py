"""Class-conditional GANs of the BigGAN family, sized for 28–64 px images and CPU training.

Two architectures (`generator.gan.arch`).  `resnet` (the `paper` preset): latent z and a shared
class embedding drive conditional BatchNorm in residual up-sampling blocks (Brock et al. 2019,
§3 and appendix B); residual down-sampling discriminator.  `lean` (the `cpu` preset): a
DCGAN-shaped generator (Radford et al. 2016) with the same conditional BatchNorm and a
strided-conv discriminator, about a quarter of the multiply-adds, so 120 kimg fit the CPU
budget.  Both discriminators are spectrally normalised projection discriminators (Miyato &
Koyama 2018), trained with the hinge loss; DiffAugment is applied to real and fake images
alike.  MSGAN's mode-seeking term (`mode_seeking`) keeps the samples of one class apart.
Sampling uses the EMA generator in eval mode, with BatchNorm "standing statistics"
recomputed before each checkpoint, so a sample depends only on its own z and label, never on
the rest of its batch.

With `teacher_ce` / `teacher_bn` > 0 the generator's loss adds the frozen teacher's judgement
of its samples (kr.generators.guide); off by default since issue 19, because it pleases the
teacher more than it makes images that carry their class (benchmarks/GENERATORS.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import spectral_norm

from kr.errors import check
from kr.generators.base import ConditionalGenerator
from kr.generators.diffaugment import diff_augment
from kr.generators.guide import guide_for
from kr.seeding import make_generator

CL = torch.channels_last


@dataclass(frozen=True)
class GanConfig:
    """BigGAN-style cGAN (the paper family's generator), scaled for 28–64 px and CPUs."""

    # The lean architecture with MSGAN's term, unguided, at 120 kimg: its samples carry their
    # class on their own (issue 19).  Digits screen, seed 0, validation ACC of a classifier trained
    # on 2× train-size samples with their labels: residual G unguided 40 kimg 0.76; lean 60 kimg
    # 0.82, 120 kimg 0.71 (within-class collapse); + mode seeking 1: 0.88, 120 kimg 0.93;
    # + translation only: 0.91; mode seeking 0.3 + translation: 0.92 with the fewest artefacts
    # (benchmarks/GENERATORS.md has the whole table).
    arch: str = "lean"            # lean (DCGAN-shaped, ~4× fewer multiply-adds) or resnet (BigGAN blocks)
    mode_seeking: float = 0.3     # weight of MSGAN's mode-seeking term (kr.generators.gan); 0 = off
    z_dim: int = 64
    g_width: int = 16             # generator channels at full resolution; ×2 per lower level
    d_width: int = 16
    # One D step per G step at 5e-4: twice the generator steps per kimg.  In exploration runs on
    # digits (10 classes) the guided cGAN's 20-epoch KR student reached val ACC 0.93, against
    # 0.51–0.60 with 2 D steps at 2e-4 (benchmarks/SPEED.md, "Generators").
    d_steps: int = 1              # discriminator steps per generator step
    lr_g: float = 5e-4
    lr_d: float = 5e-4
    beta1: float = 0.0            # BigGAN uses Adam(β1 = 0, β2 = 0.999)
    beta2: float = 0.999
    # Zhao et al. 2020; "" disables.  Translation alone: cutout and colour cost the digits screen
    # 3 points of downstream ACC with mode seeking on (0.88 against 0.91).
    diffaugment: str = "translation"
    sigma: float = 1.0            # latent std at sampling: GaFi's "expansion trick" knob (≥ 1)
    # Teacher guidance (kr.generators.guide): weights of the teacher's cross-entropy on the
    # samples and of matching its BatchNorm statistics.  Off by default: a guided generator
    # scored well with the teacher (agreement 0.93 on digits) while a classifier trained on its
    # samples lost 21–26 points (issue 19); benchmarks/GENERATORS.md measures both ways.
    teacher_ce: float = 0.0
    teacher_bn: float = 0.0

    def __post_init__(self):
        check(self.z_dim >= 1 and self.g_width >= 1 and self.d_width >= 1, "z_dim",
              "z_dim, g_width and d_width must be ≥ 1")
        check(self.arch in ("resnet", "lean"), "arch", "must be resnet or lean")
        check(self.mode_seeking >= 0, "mode_seeking", "must be ≥ 0")
        check(self.d_steps >= 1, "d_steps", "must be ≥ 1")
        check(self.lr_g > 0 and self.lr_d > 0, "lr_g", "learning rates must be > 0")
        check(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "beta1", "betas must be in [0, 1)")
        bad = set(filter(None, self.diffaugment.split(","))) - {"color", "translation", "shift", "cutout"}
        check(not bad, "diffaugment", f"unknown policy {sorted(bad)}; use color, translation, shift, cutout")
        check(self.sigma >= 1.0, "sigma", "the expansion trick widens the latent: sigma must be ≥ 1")
        check(self.teacher_ce >= 0 and self.teacher_bn >= 0, "teacher_ce",
              "teacher guidance weights (teacher_ce, teacher_bn) must be ≥ 0")

    def uses_teacher(self) -> bool:
        return self.teacher_ce > 0 or self.teacher_bn > 0


def _levels(size: int) -> tuple[int, int]:
    """Base resolution (7 for 28·2^k, else 4) and the number of 2× up-samplings to `size`."""
    base = 7 if size % 7 == 0 else 4
    ups = int(round(math.log2(size / base)))
    if base * 2 ** ups != size:
        raise ValueError(f"GAN image size must be 7·2^k or 4·2^k, got {size}")
    return base, ups


class CondBatchNorm(nn.Module):
    def __init__(self, channels: int, cond_dim: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Linear(cond_dim, channels)
        self.bias = nn.Linear(cond_dim, channels)
        nn.init.zeros_(self.gain.weight), nn.init.zeros_(self.gain.bias)
        nn.init.zeros_(self.bias.weight), nn.init.zeros_(self.bias.bias)

    def forward(self, x, cond):
        return self.bn(x) * (1 + self.gain(cond))[:, :, None, None] + self.bias(cond)[:, :, None, None]


class GBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, cond_dim: int):
        super().__init__()
        self.bn1, self.bn2 = CondBatchNorm(c_in, cond_dim), CondBatchNorm(c_out, cond_dim)
        self.conv1, self.conv2 = nn.Conv2d(c_in, c_out, 3, 1, 1), nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.skip = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x, cond):
        h = F.interpolate(F.relu(self.bn1(x, cond)), scale_factor=2)
        h = self.conv2(F.relu(self.bn2(self.conv1(h), cond)))
        return h + self.skip(F.interpolate(x, scale_factor=2))


class Generator(nn.Module):
    def __init__(self, z_dim, n_classes, channels, size, width):
        super().__init__()
        self.base, ups = _levels(size)
        widths = [width * 2 ** (ups - i) for i in range(ups + 1)]   # e.g. 4w, 2w, w
        cond_dim = z_dim + 64
        self.embed = nn.Embedding(n_classes, 64)                   # BigGAN's shared embedding
        self.linear = nn.Linear(z_dim, widths[0] * self.base ** 2)
        self.blocks = nn.ModuleList(GBlock(widths[i], widths[i + 1], cond_dim) for i in range(ups))
        self.out = nn.Sequential(nn.BatchNorm2d(widths[-1]), nn.ReLU(),
                                 nn.Conv2d(widths[-1], channels, 3, 1, 1), nn.Tanh())
        self.z_dim = z_dim

    def forward(self, z, y):
        cond = torch.cat([z, self.embed(y)], 1)
        # channels_last: ~1.7× faster sampling on CPU (2,000 → 3,500 images/s, BreastMNIST size)
        h = self.linear(z).view(len(z), -1, self.base, self.base).contiguous(memory_format=CL)
        for block in self.blocks:
            h = block(h, cond)
        return self.out(h)


class DBlock(nn.Module):
    def __init__(self, c_in, c_out, down: bool, first: bool):
        super().__init__()
        self.conv1 = spectral_norm(nn.Conv2d(c_in, c_out, 3, 1, 1))
        self.conv2 = spectral_norm(nn.Conv2d(c_out, c_out, 3, 1, 1))
        self.skip = spectral_norm(nn.Conv2d(c_in, c_out, 1))
        self.down, self.first = down, first

    def forward(self, x):
        h = x if self.first else F.relu(x)  # the first block sees images: no pre-activation
        h = self.conv2(F.relu(self.conv1(h)))
        s = self.skip(x)
        if self.down:
            h, s = F.avg_pool2d(h, 2), F.avg_pool2d(s, 2)
        return h + s


class Discriminator(nn.Module):
    def __init__(self, n_classes, channels, size, width):
        super().__init__()
        _, downs = _levels(size)
        widths = [channels] + [width * 2 ** i for i in range(downs + 1)]
        self.blocks = nn.Sequential(*[DBlock(widths[i], widths[i + 1], down=i < downs, first=i == 0)
                                      for i in range(downs + 1)])
        self.linear = spectral_norm(nn.Linear(widths[-1], 1))
        self.embed = spectral_norm(nn.Embedding(n_classes, widths[-1]))

    def forward(self, x, y):
        h = F.relu(self.blocks(x)).sum((2, 3))
        # Projection discriminator: the class enters as an inner product with the features.
        return self.linear(h).squeeze(1) + (self.embed(y) * h).sum(1)


class LeanGenerator(nn.Module):
    """DCGAN-shaped conditional generator (Radford et al. 2016): one 4×4 stride-2 transposed
    conv per level, class and latent in every conditional BatchNorm and in the first linear
    layer.  A transposed conv does its arithmetic at the lower resolution: 2.25× fewer
    multiply-adds than up-sampling followed by a 3×3 conv."""

    def __init__(self, z_dim, n_classes, channels, size, width):
        super().__init__()
        self.base, ups = _levels(size)
        widths = [width * 2 ** (ups - i) for i in range(ups + 1)]
        cond_dim = 2 * z_dim
        self.embed = nn.Embedding(n_classes, z_dim)
        self.linear = nn.Linear(cond_dim, widths[0] * self.base ** 2)
        self.norms = nn.ModuleList(CondBatchNorm(w, cond_dim) for w in widths)
        self.convs = nn.ModuleList(nn.ConvTranspose2d(widths[i], widths[i + 1], 4, 2, 1) for i in range(ups))
        self.out = nn.Conv2d(widths[-1], channels, 3, 1, 1)
        self.z_dim = z_dim

    def forward(self, z, y):
        cond = torch.cat([z, self.embed(y)], 1)
        h = self.linear(cond).view(len(z), -1, self.base, self.base).contiguous(memory_format=CL)
        h = F.relu(self.norms[0](h, cond))
        for conv, norm in zip(self.convs, self.norms[1:]):
            h = F.relu(norm(conv(h), cond))
        return torch.tanh(self.out(h))


class LeanDiscriminator(nn.Module):
    """Strided-conv projection discriminator with spectral normalisation."""

    def __init__(self, n_classes, channels, size, width):
        super().__init__()
        _, downs = _levels(size)
        widths = [width * 2 ** i for i in range(downs + 1)]
        layers = [spectral_norm(nn.Conv2d(channels, widths[0], 3, 1, 1)), nn.LeakyReLU(0.2)]
        for i in range(downs):
            layers += [spectral_norm(nn.Conv2d(widths[i], widths[i + 1], 4, 2, 1)), nn.LeakyReLU(0.2)]
        layers += [spectral_norm(nn.Conv2d(widths[-1], widths[-1], 3, 1, 1)), nn.LeakyReLU(0.2)]
        self.blocks = nn.Sequential(*layers)
        self.linear = spectral_norm(nn.Linear(widths[-1], 1))
        self.embed = spectral_norm(nn.Embedding(n_classes, widths[-1]))

    def forward(self, x, y):
        h = self.blocks(x).sum((2, 3))
        return self.linear(h).squeeze(1) + (self.embed(y) * h).sum(1)


def mode_seeking(x1, x2, z1, z2, eps: float = 1e-5) -> torch.Tensor:
    """MSGAN's regulariser (Mao et al. 2019, Eq. 3): the inverse of how far two images of one
    class move apart per unit of latent distance.  Minimised, it stops the generator mapping
    every latent of a class to one image (the within-class collapse seen on small sets)."""
    ratio = (x1 - x2).abs().mean((1, 2, 3)) / (z1 - z2).abs().mean(1)
    return 1 / (ratio.mean() + eps)


class GAN(ConditionalGenerator):
    kind = "gan"
    Config = GanConfig        # its section, generator.gan
    knobs = {"sigma": (float, "GAN latent std (expansion trick, ≥ 1).")}
    tuned_knob = "sigma"      # GaFi's expansion trick
    strategy = "every-epoch"  # a whole epoch's set in a fifth of that epoch's training

    def build(self) -> nn.Module:
        c = self.config.gan
        lean = c.arch == "lean"
        self.disc = (LeanDiscriminator if lean else Discriminator)(self.n_classes, self.channels, self.size,
                                                                   c.d_width)
        self.reals_per_step = c.d_steps
        self.disc.to(memory_format=CL)
        gen = (LeanGenerator if lean else Generator)(c.z_dim, self.n_classes, self.channels, self.size, c.g_width)
        return gen.to(memory_format=CL)

    def extra_state(self):
        return {"disc": self.disc}

    @property
    def uses_teacher(self) -> bool:
        return self.config.uses_teacher()

    def make_guide(self, teacher):
        return guide_for(teacher, self.config.gan.teacher_bn)

    def make_optimizers(self):
        c = self.config.gan
        return {"g": torch.optim.Adam(self.model.parameters(), c.lr_g, betas=(c.beta1, c.beta2)),
                "d": torch.optim.Adam(self.disc.parameters(), c.lr_d, betas=(c.beta1, c.beta2))}

    def train_step(self, real, g):
        c, opts = self.config.gan, self.opts
        device = next(self.model.parameters()).device
        bs = self.config.batch_size
        aug = lambda im: diff_augment(im, c.diffaugment, g)  # noqa: E731
        self.disc.train()
        for _ in range(c.d_steps):
            xr, yr = real()
            z = torch.randn(bs, c.z_dim, generator=g, device=device)
            with torch.no_grad():
                xf = self.model(z, yr)   # fake labels follow the real class prior
            d_loss = F.relu(1 - self.disc(aug(xr), yr)).mean() + F.relu(1 + self.disc(aug(xf), yr)).mean()
            opts["d"].zero_grad(set_to_none=True)
            d_loss.backward()
            opts["d"].step()
        z = torch.randn(bs, c.z_dim, generator=g, device=device)
        yf = yr[torch.randperm(bs, generator=g, device=device)]
        if c.mode_seeking > 0:  # pairs (i, i + bs/2) share a class, so their distance is within-class
            half = bs // 2
            yf = torch.cat([yf[:half], yf[:half], yf[2 * half:]])
        xg = self.model(z, yf)
        g_loss = -self.disc(aug(xg), yf).mean()
        losses = {"d_loss": d_loss.item(), "g_loss": g_loss.item()}
        if c.mode_seeking > 0:
            ms = mode_seeking(xg[:half], xg[half:2 * half], z[:half], z[half:2 * half])
            g_loss = g_loss + c.mode_seeking * ms
            losses["mode_seeking"] = ms.item()
        if self.guide is not None:  # the teacher's view of the un-augmented samples
            ce, bn = self.guide(xg, yf)
            g_loss = g_loss + c.teacher_ce * ce + c.teacher_bn * bn
            losses.update(teacher_ce=ce.item(), teacher_bn=bn.item())
        opts["g"].zero_grad(set_to_none=True)
        g_loss.backward()
        opts["g"].step()
        return losses

    def sample_batch(self, labels, noise, sigma: float | None = None):
        sigma = self.config.gan.sigma if sigma is None else sigma
        return self.ema(noise(self.config.gan.z_dim) * sigma, labels)

    @torch.no_grad()
    def before_save(self, batches: int = 16) -> None:
        """BigGAN's standing statistics: BatchNorm averages over many EMA-generator batches."""
        bns = [m for m in self.ema.modules() if isinstance(m, nn.BatchNorm2d)]
        device = next(self.ema.parameters()).device
        g = make_generator(0, device=device)
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average
        self.ema.train()
        for _ in range(batches):
            y = torch.randint(0, self.n_classes, (64,), generator=g, device=device)
            self.ema(torch.randn(64, self.config.gan.z_dim, generator=g, device=device), y)
        for m in bns:
            m.momentum = 0.1
        self.ema.eval()

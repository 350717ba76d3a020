"""Teacher guidance for a one-step generator: the frozen teacher (step 1 of KR) judges every
generated batch while the generator trains.

Two terms, both differentiable with respect to the images:
- cross-entropy of the teacher's prediction against the conditioning class, so a sample of
  class c is one the teacher reads as c (as an auxiliary classifier does in AC-GAN, with the
  classifier fixed and trained on real data);
- BatchNorm statistic matching (Yin et al. 2020, "Dreaming to Distill", Eq. 3): the mean and
  variance of the generated batch's features at every BatchNorm layer of the teacher, against
  the running statistics the teacher kept of the real training images.  It pulls the whole
  distribution of generated images, not only their class, toward the real one in the feature
  space the student will be distilled in.

Off by default since issue 19: the teacher then judges what was trained to please it, and an
independent judge disagreed (benchmarks/GENERATORS.md: the guided residual cGAN's digits had
teacher agreement 0.95, judge precision 0.47, and taught a classifier 0.72 against the
unguided lean cGAN's 0.98; on the lean cGAN, guidance cost 2.7× the time and its BreastMNIST KR
student fell to the majority class).  The earlier measurement, for the record: it keeps samples
in their class at a CPU budget (BreastMNIST, 40 kimg, one D step at
5e-4: teacher agreement 0.95 against 0.68 unguided, per-class Fréchet distance 2.09 against
2.93, recall 0.72 against 0.58; benchmarks/SPEED.md).  Whether that makes a better student there
is not settled: seed 0's 40-epoch KR student reached validation ACC 0.833 guided and 0.846
unguided, one image apart, and guidance made the generator stage 2.7× slower.  The teacher
saw the same real train split as the generator, so guidance exposes no data the procedure did
not already use; the privacy audit replays it.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from kr.errors import KRError


class TeacherGuide:
    """Call with (images, labels) → (cross-entropy, BatchNorm statistic distance)."""

    def __init__(self, teacher: nn.Module):
        self.teacher = teacher.eval().requires_grad_(False)
        self.norms = [m for m in teacher.modules() if isinstance(m, nn.BatchNorm2d)
                      and m.track_running_stats and m.running_mean is not None]
        self._inputs: list[torch.Tensor] = []
        self._hooks = [m.register_forward_hook(self._keep) for m in self.norms]

    def _keep(self, module, inputs, output) -> None:
        self._inputs.append(inputs[0])

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._inputs = []
        logits = self.teacher(images)
        ce = F.cross_entropy(logits, labels)
        bn = logits.new_zeros(())
        for x, m in zip(self._inputs, self.norms):
            mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=False)
            bn = bn + torch.linalg.vector_norm(mean - m.running_mean) \
                + torch.linalg.vector_norm(var - m.running_var)
        self._inputs = []
        return ce, bn

    def close(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []


def guide_for(teacher: nn.Module | None, bn_weight: float) -> TeacherGuide:
    """A guide, or a one-line error saying why this teacher cannot guide."""
    if teacher is None:
        raise KRError("this generator is trained with teacher guidance (generator.gan.teacher_ce / "
                      "teacher_bn > 0): train the teacher first, or set both to 0")
    if bn_weight > 0 and not any(isinstance(m, nn.BatchNorm2d) for m in teacher.modules()):
        raise KRError("generator.gan.teacher_bn > 0 needs a teacher with BatchNorm "
                      "(teacher.model.norm=batch); set generator.gan.teacher_bn=0")
    return TeacherGuide(teacher)

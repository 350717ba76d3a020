import json

import pytest
import torch

from kr.errors import ConfigError, KRError
from kr.models import ARCHS, build_model, load_classifier, save_classifier


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("channels, size", [(1, 28), (3, 28), (1, 64), (3, 64)])
def test_shapes_for_any_channels_and_size(arch, channels, size):
    model = build_model(arch, channels, 7, width=4, **({"image_size": size} if arch == "scatternet" else {})).eval()
    x = torch.randn(2, channels, size, size)
    assert model(x).shape == (2, 7)
    assert model.features(x).shape == (2, model.feature_dim)


def test_depth_and_width_set_the_size():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(build_model("resnet8", 1, 2)) < count(build_model("resnet20", 1, 2))
    assert count(build_model("resnet20", 1, 2, width=8)) < count(build_model("resnet20", 1, 2))
    # 6n+2 blocks: resnet20 has 3 stages of 3 blocks
    assert len(build_model("resnet20", 1, 2).blocks) == 9


@pytest.mark.parametrize("norm", ["group", "batch"])
def test_group_norm_has_no_batch_statistics(norm):
    """In train mode (where DP-SGD clips each sample's gradient) a sample's output must not
    depend on the other samples of its batch: true of GroupNorm, false of BatchNorm."""
    model = build_model("resnet8", 1, 2, width=8, norm=norm, seed=0).train()
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    alone = torch.cat([model(x[i:i + 1]) for i in range(4)])
    together = model(x)
    independent = torch.allclose(alone, together, atol=1e-5)
    assert independent == (norm == "group")
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == (norm == "batch")


def test_unknown_arch():
    with pytest.raises(ConfigError, match="unknown classifier arch 'vgg'"):
        build_model("vgg", 1, 2)


def test_save_load_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet14", 3, 5, width=8, dropout=0.1)
    model.train()
    model(torch.randn(16, 3, 28, 28))  # move BatchNorm running statistics off their init
    model.eval()
    save_classifier(model, tmp_path, "resnet14", 3, 5, width=8, dropout=0.1)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "config.json").is_file()
    loaded = load_classifier(tmp_path)
    x = torch.randn(4, 3, 28, 28)
    assert not loaded.training
    assert torch.equal(model(x), loaded(x))


@pytest.mark.parametrize("batch", [7, 15, 16])
def test_channels_last_gradients_match_the_reference_layout(batch):
    """oneDNN's strided 1×1 weight gradient on channels-last inputs narrower than its vector
    block wrote past its buffer (a crash, or wrong gradients) at width 8 and odd batches: the
    shortcut subsamples before a stride-1 conv, and its gradients match the plain layout."""
    torch.manual_seed(0)
    model = build_model("resnet8", 1, 3, width=8, norm="group")
    x, y = torch.randn(batch, 1, 28, 28), torch.randint(0, 3, (batch,))
    grads = []
    for fmt in (torch.contiguous_format, torch.channels_last):
        model.zero_grad()
        model.to(memory_format=fmt)
        torch.nn.functional.cross_entropy(model(x.contiguous(memory_format=fmt)), y).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for plain, last in zip(*grads):
        assert torch.allclose(plain, last, atol=1e-5, rtol=1e-4)


def test_shortcut_is_a_strided_one_by_one_projection():
    block = build_model("resnet8", 1, 2, width=8).blocks[1]
    assert block.stride == 2 and block.shortcut[0].stride == (1, 1)
    x = torch.randn(3, 8, 28, 28)
    strided = torch.nn.functional.conv2d(x, block.shortcut[0].weight, stride=2)
    assert torch.allclose(block.shortcut[0](x[:, :, ::2, ::2]), strided, atol=1e-6)


@pytest.mark.parametrize("head", ["linear", "cnn"])
def test_scatternet_save_load_and_a_mismatched_config(tmp_path, head):
    torch.manual_seed(0)
    model = build_model("scatternet", 1, 3, image_size=28, J=2, head=head, width=8).eval()
    save_classifier(model, tmp_path, "scatternet", 1, 3, image_size=28, J=2, head=head, width=8)
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(model(x), load_classifier(tmp_path)(x))
    config = json.loads((tmp_path / "config.json").read_text())
    config["kwargs"]["J"] = 3  # other filters, other feature count: the weights cannot fit
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(KRError, match="do not belong together"):
        load_classifier(tmp_path)


@pytest.mark.parametrize("J, size", [(1, 28), (3, 28), (4, 28), (3, 64)])
def test_scatternet_any_scale_count_and_size(J, size):
    """217 channels at J = 3 (not a multiple of 3), 28 px not divisible by 2^J: still a network."""
    for head in ("linear", "cnn"):
        if head == "cnn" and size // 2 ** J < 2:  # nothing left to pool: a clear error instead
            with pytest.raises(KRError, match="lower dpsgd.scatter_j"):
                build_model("scatternet", 1, 2, image_size=size, J=J, head=head)
            continue
        model = build_model("scatternet", 1, 2, image_size=size, J=J, head=head).eval()
        assert model(torch.randn(2, 1, size, size)).shape == (2, 2)

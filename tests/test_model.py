import pytest
import torch

import torch.nn.functional as F

from trainer.model import Conv3d, ModelConfig, ResNet3D, freeze_before, train_mode

MEAN, STD = (114.7748, 107.7354, 99.4750), (1.0, 1.0, 1.0)


def config(**kw) -> ModelConfig:
    base = dict(depth=10, shortcut="A", width=8, n_classes=2, sample_size=32, sample_duration=8,
                pretrained=None, ft_begin="layer4", mean=MEAN, std=STD, value_scale=255.0)
    return ModelConfig(**{**base, **kw})


def test_resnet34_shortcut_a_has_hara_names_and_no_downsample_parameters():
    keys = ResNet3D(config(depth=34, width=64)).state_dict().keys()
    assert not any("downsample" in k for k in keys)
    for key in ["conv1.weight", "bn1.running_mean", "layer1.2.conv2.weight", "layer3.5.bn2.bias",
                "layer4.2.bn2.num_batches_tracked", "fc.weight", "fc.bias"]:
        assert key in keys
    assert "layer4.3.conv1.weight" not in keys  # [3, 4, 6, 3] blocks


def test_shortcut_b_projects_with_conv_and_bn():
    keys = ResNet3D(config(shortcut="B")).state_dict().keys()
    assert {"layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_var"} <= set(keys)


@pytest.mark.parametrize("depth", [10, 18, 50])
def test_output_and_feature_shapes(depth):
    model = ResNet3D(config(depth=depth)).eval()
    x = torch.randn(2, 3, 8, 32, 32)
    assert model(x).shape == (2, 2)
    assert model.features(x).shape == (2, 8 * 8 * (4 if depth >= 50 else 1))


def test_freeze_before_trains_only_later_stages_and_keeps_frozen_bn_in_eval():
    model = ResNet3D(config())
    params = freeze_before(model, "layer4")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("layer4.", "fc.")) for n in trainable)
    assert len(params) == len(trainable)
    train_mode(model)
    assert not model.layer3[0].bn1.training and model.layer4[0].bn1.training
    before = model.layer3[0].bn1.running_mean.clone()
    model(torch.randn(2, 3, 8, 32, 32) * 10)
    assert torch.equal(before, model.layer3[0].bn1.running_mean)


def test_invalid_config():
    with pytest.raises(ValueError, match="depth 11"):
        config(depth=11)


@pytest.mark.parametrize("kernel, stride", [(3, 1), (3, 2), (1, 1), (1, 2)])
def test_a_single_frame_runs_as_the_equal_2d_conv_forward_and_backward(kernel, stride):
    """trainer.model.Conv3d on T = 1: the 2D kernel with the middle time slice, exactly the 3D conv's function and
    gradients (the other slices only meet zero padding); on T > 1 it is the 3D conv."""
    torch.manual_seed(0)
    conv = Conv3d(8, 16, kernel_size=kernel, stride=stride, padding=kernel // 2, bias=False)
    for frames in (1, 2):
        x = torch.randn(2, 8, frames, 6, 6, requires_grad=True)
        y = conv(x)
        reference_x = x.detach().clone().requires_grad_()
        reference = F.conv3d(reference_x, conv.weight.detach().clone().requires_grad_(), None, conv.stride,
                             conv.padding)
        torch.testing.assert_close(y, reference, rtol=1e-5, atol=1e-5)
        grad = torch.randn_like(y)
        y.backward(grad)
        reference.backward(grad)
        torch.testing.assert_close(x.grad, reference_x.grad, rtol=1e-5, atol=1e-5)
        weight_grad = conv.weight.grad.clone()
        conv.weight.grad = None
        if frames == 1 and kernel == 3:
            assert weight_grad[:, :, [0, 2]].abs().max() == 0  # the slices that only meet padding learn nothing
    assert set(conv.state_dict()) == {"weight"} and conv.weight.shape == (16, 8, kernel, kernel, kernel)


def test_resnet34_layer4_runs_its_single_frame_in_2d_and_equals_the_3d_model():
    torch.manual_seed(0)
    cfg = config(depth=34, width=8, sample_size=112, sample_duration=16)
    model = ResNet3D(cfg).eval()
    x = torch.randn(2, 3, 16, 112, 112)
    with torch.no_grad():
        got = model(x)
        for m in model.modules():
            if isinstance(m, Conv3d):
                m.forward = torch.nn.Conv3d.forward.__get__(m)  # the plain 3D kernels everywhere
        torch.testing.assert_close(got, model(x), rtol=1e-4, atol=1e-4)

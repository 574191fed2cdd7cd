"""Backbones: stage features, output strides, dilation, torchvision equivalence and weight loading."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from segzoo.models import FrozenBatchNorm2d, create_backbone, freeze_batchnorm, load_weights
from segzoo.models.backbones import ResNetBackbone, VGG16Backbone
from segzoo.models.weights import find_prefix
from segzoo.registry import BACKBONES


def test_registered_backbones():
    assert {"resnet18", "resnet34", "resnet50", "resnet101", "vgg16"} <= set(BACKBONES.names())


@pytest.mark.parametrize("output_stride", [32, 16, 8])
def test_resnet18_feature_sizes_follow_the_output_stride(output_stride):
    backbone = create_backbone("resnet18", output_stride=output_stride).eval()
    with torch.no_grad():
        features = backbone(torch.rand(1, 3, 64, 128))
    assert list(features) == ["stem", "layer1", "layer2", "layer3", "layer4"]
    for name, feature in features.items():
        stride = backbone.strides[name]
        assert feature.shape == (1, backbone.channels[name], 64 // stride, 128 // stride), name
    assert backbone.strides["layer4"] == output_stride
    assert backbone.out_channels == 512


def test_odd_sizes_round_up_like_torchvision():
    backbone = create_backbone("resnet18", output_stride=8).eval()
    with torch.no_grad():
        features = backbone(torch.rand(1, 3, 33, 47))
    assert features["layer1"].shape[-2:] == (9, 12)
    assert features["layer4"].shape[-2:] == (5, 6)


def test_basicblock_dilation_matches_torchvision_pattern():
    """First block of a dilated stage keeps the previous dilation, the rest use the new one."""
    backbone = ResNetBackbone(depth=34, output_stride=8)
    dilations = [[block.conv1.dilation[0], block.conv2.dilation[0]] for block in backbone.layer4]
    assert dilations == [[2, 4], [4, 4], [4, 4]]
    assert [block.conv1.dilation[0] for block in backbone.layer3] == [1, 2, 2, 2, 2, 2]
    assert all(
        c.padding == c.dilation
        for c in backbone.modules()
        if isinstance(c, nn.Conv2d) and c.kernel_size == (3, 3)
    )
    assert backbone.layer3[0].downsample[0].stride == (1, 1)
    assert backbone.channels == {"stem": 64, "layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512}


@pytest.mark.parametrize("output_stride", [16, 8])
def test_bottleneck_dilation_equals_torchvision(output_stride):
    """Same weights, same outputs as torchvision's own replace_stride_with_dilation."""
    replace = [False, False, True] if output_stride == 16 else [False, True, True]
    reference = torchvision.models.resnet50(weights=None, replace_stride_with_dilation=replace).eval()
    ours = ResNetBackbone(depth=50, output_stride=output_stride).eval()
    ours.load_state_dict(reference.state_dict(), strict=False)
    x = torch.rand(1, 3, 40, 40)
    with torch.no_grad():
        h = reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))
        expected = reference.layer4(reference.layer3(reference.layer2(reference.layer1(h))))
        torch.testing.assert_close(ours(x)["layer4"], expected)
    assert ours.channels["layer4"] == 2048 and ours.channels["layer1"] == 256


def test_bad_resnet_configuration_errors():
    with pytest.raises(ValueError, match="output_stride=4 is not supported; expected one of"):
        ResNetBackbone(depth=18, output_stride=4)
    with pytest.raises(ValueError, match="ResNet depth 20 is not supported"):
        ResNetBackbone(depth=20)
    with pytest.raises(KeyError, match="unknown backbone 'resnet20'"):
        create_backbone("resnet20")


def test_vgg16_features_and_size_limit():
    backbone = VGG16Backbone(fc_channels=16).eval()
    with torch.no_grad():
        features = backbone(torch.rand(1, 3, 33, 47))
    assert features["pool3"].shape == (1, 256, 4, 5)
    assert features["pool4"].shape == (1, 512, 2, 2)
    assert features["fc7"].shape == (1, 16, 1, 1)
    with pytest.raises(ValueError, match="at least 32x32 pixels, got 31x64"):
        backbone(torch.rand(1, 3, 31, 64))
    with pytest.raises(ValueError, match="only output_stride=32"):
        VGG16Backbone(output_stride=8)


def test_vgg16_loads_torchvision_layout_with_fc_layers_as_convs(tmp_path):
    """torchvision's classifier.0/3 (Linear) become fc6/fc7 convs computing the same function."""
    backbone = VGG16Backbone(fc_channels=16).eval()
    torch.manual_seed(0)
    state = {k: torch.randn_like(v) for k, v in backbone.state_dict().items() if k.startswith("features.")}
    fc6, fc7 = nn.Linear(512 * 7 * 7, 16), nn.Linear(16, 16)
    state.update({f"classifier.0.{k}": v for k, v in fc6.state_dict().items()})
    state.update({f"classifier.3.{k}": v for k, v in fc7.state_dict().items()})
    state.update({"classifier.6.weight": torch.randn(1000, 16), "classifier.6.bias": torch.randn(1000)})
    path = tmp_path / "vgg16.pth"
    torch.save(state, path)
    report = load_weights(backbone, path)
    assert report.prefix == "" and report.missing == [] and report.unexpected == []
    torch.testing.assert_close(backbone.features[0].weight, state["features.0.weight"])
    pool5 = torch.rand(1, 512, 7, 7)
    with torch.no_grad():
        # on a 7x7 map the centre of the padded 7x7 fc6 conv sees the whole map, like the Linear layer
        torch.testing.assert_close(backbone.fc6(pool5)[0, :, 3, 3], fc6(pool5.flatten(1))[0])
        torch.testing.assert_close(backbone.fc7(torch.ones(1, 16, 1, 1)).flatten(), fc7(torch.ones(1, 16))[0])


def test_resnet_loads_a_torchvision_state_dict_and_computes_the_same(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None).eval()
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    backbone = create_backbone("resnet18", weights=path).eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        h = reference.layer1(reference.maxpool(reference.relu(reference.bn1(reference.conv1(x)))))
        expected = reference.layer4(reference.layer3(reference.layer2(h)))
        torch.testing.assert_close(backbone(x)["layer4"], expected)


def test_load_weights_errors_name_the_file(tmp_path):
    backbone = ResNetBackbone(depth=18)
    with pytest.raises(FileNotFoundError, match=r"weights file not found: .*r18\.pth\. Put a local"):
        load_weights(backbone, tmp_path / "r18.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"cannot read weights file .*junk\.pth"):
        load_weights(backbone, tmp_path / "junk.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ValueError, match=r"list\.pth holds a list, expected a state dict"):
        load_weights(backbone, tmp_path / "list.pth")
    torch.save({"encoder.conv1.weight": torch.zeros(64, 3, 7, 7)}, tmp_path / "enc.pth")
    with pytest.raises(ValueError, match=r"enc\.pth has no keys starting with prefix 'model\.'"):
        load_weights(backbone, tmp_path / "enc.pth", prefix="model.")
    with pytest.raises(
        ValueError, match=r"enc\.pth does not fit ResNetBackbone .*'encoder\.'.*\d+ missing keys \(bn1"
    ):
        load_weights(backbone, tmp_path / "enc.pth")


def test_find_prefix_prefers_the_best_matching_subtree():
    target = {"conv1.weight", "layer1.0.conv1.weight", "fc.weight"}
    keys = ["model.backbone.conv1.weight", "model.backbone.layer1.0.conv1.weight", "model.head.fc.weight"]
    assert find_prefix(keys, target) == "model.backbone."
    assert find_prefix(["conv1.weight", "x.conv1.weight"], target) == ""
    assert find_prefix(["nothing.here"], target) == ""


def test_freeze_batchnorm_keeps_statistics_and_state_dict_layout():
    backbone = ResNetBackbone(depth=18)
    keys = list(backbone.state_dict())
    freeze_batchnorm(backbone)
    assert list(backbone.state_dict()) == keys
    bns = [m for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(isinstance(m, FrozenBatchNorm2d) for m in bns)
    backbone.train()
    before = backbone.layer2[0].bn1.running_var.clone()
    backbone(torch.rand(2, 3, 32, 32))
    torch.testing.assert_close(backbone.layer2[0].bn1.running_var, before, rtol=0, atol=0)
    assert backbone.training and not backbone.bn1.training
    assert not any(p.requires_grad for m in bns for p in m.parameters())
    assert all(p.requires_grad for n, p in backbone.named_parameters() if "conv" in n)


def test_checkpoint_with_pickled_hyperparameters_loads(tmp_path):
    """Lightning may pickle objects (here a Namespace) that torch's weights-only loader refuses."""
    from argparse import Namespace

    source = ResNetBackbone(depth=18)
    state = {f"model.backbone.{k}": v for k, v in source.state_dict().items()}
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": {"args": Namespace(lr=0.1)}}, path)
    target = ResNetBackbone(depth=18)
    report = load_weights(target, path)
    assert report.prefix == "model.backbone."
    assert all(torch.equal(v, target.state_dict()[k]) for k, v in source.state_dict().items())

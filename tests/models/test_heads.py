"""Heads: structure against the papers / torchvision, and the invariants each one promises."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.segmentation.deeplabv3 import DeepLabHead as TVDeepLabHead
from torchvision.models.segmentation.fcn import FCNHead as TVFCNHead

from segzoo.models.heads import (
    ASPP,
    ASPPv2,
    DeepLabV3Head,
    DeepLabV3PlusHead,
    FCNHead,
    FCNVGGHead,
    GloReHead,
    GloReUnit,
    PSPHead,
    PyramidPooling,
    UNetDecoder,
    aspp_rates,
)
from segzoo.models.heads.fcn import Upsample2x, bilinear_kernel
from segzoo.models.heads.glore import GraphConv
from segzoo.registry import HEADS


def shapes(module: nn.Module) -> list[tuple[int, ...]]:
    return [tuple(p.shape) for p in module.parameters()]


def test_heads_are_registered():
    expected = {"fcn_head", "fcn_vgg_head", "psp_head", "deeplabv2_head", "deeplabv3_head", "glore_head"}
    assert expected | {"deeplabv3plus_head", "unet_decoder", "resnet_unet_decoder"} <= set(HEADS.names())


# --- FCN -------------------------------------------------------------------------------------------------


def test_fcn_head_has_torchvision_structure():
    head = FCNHead(64, 5)
    assert shapes(head) == shapes(TVFCNHead(64, 5))
    assert [type(m) for m in head.block] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Dropout, nn.Conv2d]
    assert head.block[0].out_channels == 16 and head.block[3].p == 0.1
    out = head.eval()({"layer4": torch.rand(2, 64, 5, 6), "layer3": torch.rand(2, 3, 1, 1)})
    assert out.shape == (2, 5, 5, 6)


def test_bilinear_upsampling_equals_interpolation_inside_the_border():
    up = Upsample2x(3)
    x = torch.rand(1, 3, 6, 7)
    with torch.no_grad():
        ours = up(x, output_size=[12, 14])
    reference = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(ours[..., 1:-1, 1:-1], reference[..., 1:-1, 1:-1])
    # channels are upsampled independently
    assert torch.count_nonzero(bilinear_kernel(3, 4)[0, 1]) == 0


@pytest.mark.parametrize("size", [(12, 14), (13, 15)])
def test_upsample_reaches_odd_skip_sizes(size):
    assert Upsample2x(2)(torch.rand(1, 2, 6, 7), output_size=list(size)).shape[-2:] == size


@pytest.mark.parametrize(("stride", "key", "n_params"), [(32, "fc7", 2), (16, "pool4", 5), (8, "pool3", 8)])
def test_fcn_vgg_head_skip_fusion(stride, key, n_params):
    features = {
        "pool3": torch.rand(1, 256, 9, 11),
        "pool4": torch.rand(1, 512, 4, 5),
        "fc7": torch.rand(1, 32, 2, 2),
    }
    head = FCNVGGHead(4, stride=stride, in_channels=32)
    assert len(list(head.parameters())) == n_params
    out = head(features)
    assert out.shape == (1, 4, *features[key].shape[-2:])
    assert torch.count_nonzero(out) == 0  # score layers start at zero, as in the paper
    with pytest.raises(ValueError, match="output stride must be 8, 16 or 32, got 4"):
        FCNVGGHead(4, stride=4)


def test_fcn8s_fusion_is_the_sum_of_upsampled_scores():
    torch.manual_seed(0)
    head = FCNVGGHead(3, stride=8, in_channels=8)
    for conv in (head.score_fr, head.score_pool4, head.score_pool3):
        nn.init.normal_(conv.weight)
    features = {
        "pool3": torch.rand(1, 256, 8, 9),
        "pool4": torch.rand(1, 512, 4, 4),
        "fc7": torch.rand(1, 8, 2, 2),
    }
    with torch.no_grad():
        s4 = head.upscore2(head.score_fr(features["fc7"]), output_size=[4, 4]) + head.score_pool4(
            features["pool4"]
        )
        expected = head.upscore_pool4(s4, output_size=[8, 9]) + head.score_pool3(features["pool3"])
        torch.testing.assert_close(head(features), expected)


# --- PSPNet ----------------------------------------------------------------------------------------------


def test_pyramid_pooling_concatenates_input_and_bins():
    ppm = PyramidPooling(64).eval()
    assert ppm.out_channels == 128
    assert [stage[0].output_size for stage in ppm.stages] == [1, 2, 3, 6]
    assert all(stage[1][0].out_channels == 16 for stage in ppm.stages)
    x = torch.rand(2, 64, 7, 9)
    with torch.no_grad():
        out = ppm(x)
    assert out.shape == (2, 128, 7, 9)
    torch.testing.assert_close(out[:, :64], x)
    global_branch = out[:, 64:80]
    torch.testing.assert_close(global_branch, global_branch[..., :1, :1].expand_as(global_branch))


def test_psp_head_structure():
    head = PSPHead(64, 5).eval()
    assert head.bottleneck[0].in_channels == 128 and head.bottleneck[0].out_channels == 512
    assert head.bottleneck[0].kernel_size == (3, 3) and head.dropout.p == 0.1
    assert head({"layer4": torch.rand(1, 64, 5, 6)}).shape == (1, 5, 5, 6)


# --- DeepLab v2 ------------------------------------------------------------------------------------------


def test_asppv2_is_a_sum_of_dilated_classifiers():
    torch.manual_seed(0)
    aspp = ASPPv2(16, 4)
    assert [b.dilation[0] for b in aspp.branches] == [6, 12, 18, 24]
    assert all(b.padding == b.dilation and b.out_channels == 4 for b in aspp.branches)
    assert float(aspp.branches[0].weight.detach().std()) == pytest.approx(0.01, rel=0.2)
    x = torch.rand(2, 16, 9, 10)
    with torch.no_grad():
        expected = sum(branch(x) for branch in aspp.branches)
        torch.testing.assert_close(aspp(x), expected)
    assert aspp(x).shape == (2, 4, 9, 10)


# --- DeepLab v3 / v3+ ------------------------------------------------------------------------------------


def test_aspp_rates_follow_the_output_stride():
    assert aspp_rates(16) == (6, 12, 18) and aspp_rates(8) == (12, 24, 36)
    with pytest.raises(ValueError, match="no ASPP rates for output_stride=4"):
        aspp_rates(4)


def test_deeplabv3_head_has_torchvision_structure():
    ours = DeepLabV3Head(64, 5, rates=(12, 24, 36))
    assert shapes(ours) == shapes(TVDeepLabHead(64, 5, atrous_rates=(12, 24, 36)))
    aspp = ours.classifier[0]
    assert isinstance(aspp, ASPP) and len(aspp.convs) == 5
    assert [b[0].dilation[0] for b in aspp.convs[1:4]] == [12, 24, 36]
    assert aspp.project[-1].p == 0.5


def test_aspp_image_pooling_branch_is_spatially_constant():
    aspp = ASPP(16, (1, 2, 3), out_channels=8).eval()
    x = torch.rand(2, 16, 5, 7)
    with torch.no_grad():
        pooled = aspp.convs[4](x)
    assert pooled.shape == (2, 8, 5, 7)
    torch.testing.assert_close(pooled, pooled[..., :1, :1].expand_as(pooled))
    assert aspp(x).shape == (2, 8, 5, 7)


def test_deeplabv3plus_decoder_works_at_stride_four():
    head = DeepLabV3PlusHead(64, 16, 5).eval()
    assert head.low_project[0].out_channels == 48
    assert head.fuse[0][0].in_channels == 256 + 48 and head.fuse[1][0].out_channels == 256
    features = {"layer4": torch.rand(1, 64, 3, 3), "layer1": torch.rand(1, 16, 9, 12)}
    with torch.no_grad():
        assert head(features).shape == (1, 5, 9, 12)


# --- GloRe -----------------------------------------------------------------------------------------------


def test_glore_unit_is_the_identity_at_initialisation():
    unit = GloReUnit(16, num_mid=4).train()
    assert unit.num_state == 8 and unit.num_node == 4
    assert torch.count_nonzero(unit.blocker.weight) == 0
    x = torch.rand(2, 16, 5, 7)
    torch.testing.assert_close(unit(x), x)


def test_glore_head_equals_the_head_without_the_unit_at_initialisation():
    torch.manual_seed(0)
    with_unit = GloReHead(32, 5, channels=16, num_mid=4).eval()
    without = GloReHead(32, 5, channels=16, num_units=0).eval()
    missing, unexpected = without.load_state_dict(with_unit.state_dict(), strict=False)
    assert missing == [] and all(k.startswith("units.0.") for k in unexpected)
    features = {"layer4": torch.rand(2, 32, 6, 5)}
    with torch.no_grad():
        torch.testing.assert_close(with_unit(features), without(features))
    assert with_unit.reduce[0].out_channels == 16 and with_unit.dropout.p == 0.1


def test_glore_unit_matches_the_formula():
    torch.manual_seed(0)
    unit = GloReUnit(6, num_mid=3).eval()
    nn.init.normal_(unit.blocker.weight)
    x = torch.rand(1, 6, 4, 5)
    with torch.no_grad():
        s = unit.conv_state(x).flatten(2)[0]  # [2m, L]
        b = unit.conv_proj(x).flatten(2)[0]  # [m, L]
        v = s @ b.T / 20  # [2m, m]
        a = unit.gcn.node_conv.weight[:, :, 0]  # node mixing [m, m]
        h = v @ a.T + unit.gcn.node_conv.bias + v
        g = unit.gcn.state_conv.weight[:, :, 0] @ torch.relu(h)
        y = (g @ b).reshape(1, 6, 4, 5)
        expected = x + unit.blocker(unit.conv_extend(y))
        torch.testing.assert_close(unit(x), expected)


def test_glore_node_features_do_not_grow_with_the_image():
    unit = GloReUnit(4, num_mid=2).eval()
    nn.init.ones_(unit.blocker.weight)
    pixel = torch.rand(1, 4, 1, 1)
    with torch.no_grad():
        small = unit(pixel.expand(1, 4, 3, 3))
        large = unit(pixel.expand(1, 4, 12, 15))
    torch.testing.assert_close(small[..., 0, 0], large[..., 0, 0])


def test_graph_conv_preserves_shape():
    assert GraphConv(8, 4)(torch.rand(2, 8, 4)).shape == (2, 8, 4)


# --- UNet ------------------------------------------------------------------------------------------------


def test_unet_decoder_concatenates_skips():
    decoder = UNetDecoder([4, 8, 16], num_classes=3).eval()
    assert [up.up.out_channels for up in decoder.ups] == [8, 4]
    assert [up.conv[0][0].in_channels for up in decoder.ups] == [16, 8]
    features = {
        "enc0": torch.rand(1, 4, 11, 13),
        "enc1": torch.rand(1, 8, 5, 6),
        "enc2": torch.rand(1, 16, 2, 3),
    }
    with torch.no_grad():
        assert decoder(features).shape == (1, 3, 11, 13)

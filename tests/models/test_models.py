"""One test class run on every registered model: shapes at odd sizes, gradients, determinism, scripting."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from segzoo.models import Segmentor, VGG16Backbone, create_model, list_models

# Small configurations so the whole class runs in seconds on a CPU; every registered model needs one.
TINY: dict[str, dict] = {
    "deeplabv2": {"backbone": "resnet18"},
    "deeplabv3": {"backbone": "resnet18"},
    "deeplabv3plus": {"backbone": "resnet18"},
    "fcn": {"backbone": "resnet18"},
    "fcn8s": {"fc_channels": 32},
    "fcn16s": {"fc_channels": 32},
    "fcn32s": {"fc_channels": 32},
    "glore": {"backbone": "resnet18", "num_mid": 8},
    "pspnet": {"backbone": "resnet18"},
    "unet": {"base_channels": 8, "depth": 3},
    # variants exercising options of the registered models
    "unet[resnet18]": {"backbone": "resnet18"},
    "fcn[aux]": {"backbone": "resnet18", "aux": True},
    "deeplabv3[aux,os8]": {"backbone": "resnet18", "aux": True, "output_stride": 8},
}
CASES = sorted(TINY)
NUM_CLASSES = 5
H, W = 33, 47


def build(case: str, **extra) -> nn.Module:
    torch.manual_seed(0)
    return create_model(case.split("[")[0], num_classes=NUM_CLASSES, **{**TINY[case], **extra})


def test_every_registered_model_has_a_tiny_configuration():
    assert set(list_models()) <= set(TINY), "add a tiny configuration to TINY for every new model"


@pytest.fixture(scope="class")
def model(case) -> nn.Module:
    """One model per case, shared by the tests of the class (building is the slow part)."""
    return build(case)


@pytest.mark.parametrize("case", CASES, scope="class")
class TestModel:
    def test_output_dict_at_odd_input_size(self, case, model):
        model.eval()
        with torch.no_grad():
            out = model(torch.rand(2, 3, H, W))
        assert isinstance(out, dict)
        assert out["out"].shape == (2, NUM_CLASSES, H, W)
        assert out["out"].dtype == torch.float32
        if getattr(model, "aux_head", None) is not None:
            assert out["aux"].shape == (2, NUM_CLASSES, H, W)
        else:
            assert "aux" not in out

    def test_parts_are_separate_attributes(self, model):
        assert isinstance(model, Segmentor)
        assert isinstance(model.backbone, nn.Module) and isinstance(model.head, nn.Module)
        assert model.num_classes == NUM_CLASSES
        parts = {
            id(p)
            for part in (model.backbone, model.head, model.aux_head)
            if part is not None
            for p in part.parameters()
        }
        assert parts == {id(p) for p in model.parameters()}

    def test_backward_reaches_every_parameter(self, model):
        model.zero_grad(set_to_none=True)
        model.train()
        out = model(torch.rand(2, 3, H, W))
        sum(v.float().mean() for v in out.values()).backward()
        missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert missing == []

    def test_eval_is_deterministic(self, model):
        model.eval()
        x = torch.rand(1, 3, H, W)
        with torch.no_grad():
            a, b = model(x)["out"], model(x)["out"]
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    def test_seeded_construction_is_reproducible(self, case, model):
        first, second = dict(model.named_parameters()), dict(build(case).named_parameters())
        assert first.keys() == second.keys()
        assert all(torch.equal(first[k], second[k]) for k in first)

    def test_torchscript_matches_eager(self, model):
        model.eval()
        with warnings.catch_warnings():
            # torch.jit.script is deprecated in recent torch but still the portable export for these models
            warnings.simplefilter("ignore", FutureWarning)
            scripted = torch.jit.script(model)
        x = torch.rand(1, 3, H, W)
        with torch.no_grad():
            torch.testing.assert_close(scripted(x)["out"], model(x)["out"])

    def test_freeze_bn_keeps_backbone_statistics(self, case):
        model = build(case, freeze_bn=True).train()
        bns = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
        if isinstance(model.backbone, VGG16Backbone):
            assert bns == []  # nothing to freeze in VGG-16, and asking for it is harmless
            return
        before = [m.running_mean.clone() for m in bns]
        model(torch.rand(2, 3, H, W))
        assert all(torch.equal(b, m.running_mean) for b, m in zip(before, bns, strict=True))
        assert not any(p.requires_grad for m in bns for p in m.parameters())
        assert all(not m.training for m in bns)


def test_unknown_model_lists_the_registered_names():
    with pytest.raises(KeyError, match="registered models: .*unet"):
        create_model("no-such-net", num_classes=2)


@pytest.mark.parametrize("num_classes", [0, -1, 2.5, True])
def test_bad_num_classes(num_classes):
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        create_model("unet", num_classes=num_classes)


def test_classic_unet_any_size_and_options():
    model = create_model("unet", num_classes=2, base_channels=4, depth=2).eval()
    assert model.backbone.channels == {"enc0": 4, "enc1": 8, "enc2": 16}
    with torch.no_grad():
        for size in [(4, 4), (5, 7), (31, 64), (17, 18)]:
            assert model(torch.rand(1, 3, *size))["out"].shape == (1, 2, *size)
    with pytest.raises(ValueError, match="at least 4x4 pixels, got 3x9"):
        model(torch.rand(1, 3, 3, 9))


def test_classic_unet_defaults_are_the_paper_widths():
    model = create_model("unet", num_classes=2)
    assert model.backbone.channels["enc4"] == 1024 and model.backbone.channels["enc0"] == 64


def test_unet_rejects_options_it_cannot_honour():
    with pytest.raises(ValueError, match="takes a ResNet backbone .* got backbone='vgg16'"):
        create_model("unet", num_classes=2, backbone="vgg16")
    with pytest.raises(ValueError, match="configure the classic UNet only"):
        create_model("unet", num_classes=2, backbone="resnet18", depth=3)
    with pytest.raises(ValueError, match="no auxiliary head"):
        create_model("unet", num_classes=2, aux=True)
    with pytest.raises(TypeError):
        create_model("unet", 2, "resnet18")


@pytest.mark.parametrize(
    ("name", "stride"),
    [("fcn", 8), ("pspnet", 8), ("glore", 8), ("deeplabv2", 8), ("deeplabv3", 16), ("deeplabv3plus", 16)],
)
def test_default_output_stride(name, stride):
    model = create_model(name, num_classes=2, backbone="resnet18")
    assert model.backbone.output_stride == stride
    with torch.no_grad():
        features = model.backbone.eval()(torch.rand(1, 3, 64, 96))
    assert features["layer4"].shape[-2:] == (64 // stride, 96 // stride)


@pytest.mark.parametrize("name", ["fcn8s", "fcn16s", "fcn32s"])
def test_vgg_fcn_rejects_what_it_cannot_honour(name):
    with pytest.raises(ValueError, match=f"{name}.*classic FCN on VGG-16.*backbone='resnet50'"):
        create_model(name, num_classes=2, backbone="resnet50")
    with pytest.raises(ValueError, match="output stride 32, got output_stride=8"):
        create_model(name, num_classes=2, output_stride=8, fc_channels=8)
    with pytest.raises(ValueError, match="no auxiliary head"):
        create_model(name, num_classes=2, aux=True, fc_channels=8)
    assert isinstance(
        create_model(name, num_classes=2, backbone="VGG16", fc_channels=8).backbone, VGG16Backbone
    )


@pytest.mark.parametrize("name", ["fcn", "pspnet", "deeplabv2", "deeplabv3", "deeplabv3plus", "glore"])
def test_resnet_models_reject_other_backbones(name):
    with pytest.raises(ValueError, match=f"model '{name}' takes a ResNet backbone .*got backbone='vgg16'"):
        create_model(name, num_classes=2, backbone="vgg16")
    with pytest.raises(ValueError, match="output_stride=4 is not supported"):
        create_model(name, num_classes=2, backbone="resnet18", output_stride=4)


def test_deeplabv2_has_no_aux_and_pspnet_has_one_by_default():
    with pytest.raises(ValueError, match="'deeplabv2' has no auxiliary head"):
        create_model("deeplabv2", num_classes=2, backbone="resnet18", aux=True)
    psp = create_model("pspnet", num_classes=2, backbone="resnet18")
    assert psp.aux_head is not None and psp.aux_head.in_key == "layer3"
    assert create_model("pspnet", num_classes=2, backbone="resnet18", aux=False).aux_head is None


@pytest.mark.parametrize(
    ("name", "builder"),
    [("fcn", "fcn_resnet50"), ("deeplabv3", "deeplabv3_resnet50")],
)
def test_parameter_count_matches_torchvision(name, builder):
    import torchvision.models.segmentation as tvseg

    reference = getattr(tvseg, builder)(weights=None, weights_backbone=None, num_classes=21, aux_loss=False)
    ours = create_model(name, num_classes=21, backbone="resnet50", output_stride=8)
    n_ref = sum(p.numel() for p in reference.parameters())
    n_ours = sum(p.numel() for p in ours.parameters())
    assert abs(n_ours - n_ref) / n_ref < 0.01
    assert n_ours == n_ref  # the structure is the same, so the count is exact


# --- weights ---------------------------------------------------------------------------------------------


def _tiny_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return create_model("fcn", num_classes=3, backbone="resnet18", aux=True)


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_weights_round_trip_from_a_state_dict(tmp_path):
    source = _tiny_model(0)
    path = tmp_path / "model.pt"
    torch.save(source.state_dict(), path)
    torch.manual_seed(1)
    loaded = create_model("fcn", num_classes=3, backbone="resnet18", aux=True, weights=path)
    assert _same_weights(source, loaded)
    x = torch.rand(1, 3, 33, 47)
    with torch.no_grad():
        torch.testing.assert_close(source.eval()(x)["out"], loaded.eval()(x)["out"])


def test_weights_round_trip_from_a_lightning_checkpoint(tmp_path):
    source = _tiny_model(0)
    path = tmp_path / "epoch=3.ckpt"
    state = {f"model.{k}": v for k, v in source.state_dict().items()}
    state["criterion.weight"] = torch.ones(3)  # a non-model tensor under another prefix is ignored
    torch.save({"epoch": 3, "global_step": 10, "state_dict": state, "hyper_parameters": {"lr": 0.1}}, path)
    loaded = create_model("fcn", num_classes=3, backbone="resnet18", aux=True, weights=path)
    assert _same_weights(source, loaded)


def test_backbone_weights_from_a_self_supervised_checkpoint(tmp_path):
    source = _tiny_model(0)
    path = tmp_path / "r2o.ckpt"
    state = {f"online_encoder.{k}": v for k, v in source.backbone.state_dict().items()}
    state.update(
        {f"target_encoder.{k}": torch.zeros_like(v) for k, v in source.backbone.state_dict().items()}
    )
    state["online_projector.0.weight"] = torch.ones(4, 4)
    torch.save({"state_dict": state}, path)
    # explicit prefix: the target encoder would match just as well, so the choice must be the user's
    loaded = create_model(
        "fcn",
        num_classes=3,
        backbone="resnet18",
        backbone_weights=path,
        backbone_weights_prefix="online_encoder.",
    )
    assert _same_weights(source.backbone, loaded.backbone)


def test_backbone_weights_from_a_torchvision_state_dict(tmp_path):
    import torchvision

    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    model = create_model("deeplabv3", num_classes=3, backbone="resnet18", backbone_weights=path)
    torch.testing.assert_close(model.backbone.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    assert not hasattr(model.backbone, "fc")


def test_missing_weights_file_says_what_to_put_there(tmp_path):
    path = tmp_path / "nowhere" / "resnet50.pth"
    with pytest.raises(
        FileNotFoundError, match=r"weights file not found: .*nowhere.*resnet50\.pth.*state dict"
    ):
        create_model("fcn", num_classes=3, backbone="resnet18", weights=path)


def test_mismatched_keys_are_listed(tmp_path):
    path = tmp_path / "resnet34.pt"
    torch.save(create_model("fcn", num_classes=3, backbone="resnet34").state_dict(), path)
    with pytest.raises(
        ValueError, match=r"resnet34\.pt does not fit Segmentor.*unexpected keys \(backbone\.layer1\.2"
    ):
        create_model("fcn", num_classes=3, backbone="resnet18", weights=path)


def test_shape_mismatch_is_an_error_unless_not_strict(tmp_path):
    from segzoo.models import load_weights

    source = create_model("fcn", num_classes=7, backbone="resnet18")
    path = tmp_path / "voc.pt"
    torch.save(source.state_dict(), path)
    with pytest.raises(
        ValueError, match=r"voc\.pt .*2 shape mismatches \(head\.block\.4\.weight: file \(7, 128, 1, 1\)"
    ):
        create_model("fcn", num_classes=3, backbone="resnet18", weights=path)
    target = create_model("fcn", num_classes=3, backbone="resnet18")
    report = load_weights(target, path, strict=False)
    assert [m.split(":")[0] for m in report.mismatched] == ["head.block.4.weight", "head.block.4.bias"]
    assert _same_weights(source.backbone, target.backbone)


def test_freeze_bn_survives_train_calls_and_keeps_loaded_statistics(tmp_path):
    source = _tiny_model(0)
    for m in source.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_()
    path = tmp_path / "model.pt"
    torch.save(source.state_dict(), path)
    model = create_model("fcn", num_classes=3, backbone="resnet18", aux=True, weights=path, freeze_bn=True)
    model.train()
    model(torch.rand(2, 3, 33, 47))
    torch.testing.assert_close(model.backbone.bn1.running_mean, source.backbone.bn1.running_mean)
    # only the backbone is frozen: the head's BatchNorm still trains
    assert model.head.block[1].training and model.head.block[1].weight.requires_grad


def test_backbone_file_given_as_model_weights_points_to_backbone_weights(tmp_path):
    import torchvision

    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match=r"resnet18\.pth does not fit Segmentor.*backbone_weights=path"):
        create_model("fcn", num_classes=3, backbone="resnet18", weights=path)

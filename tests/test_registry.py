import pytest

import segzoo
from segzoo.registry import DATASETS, METHODS, MODELS, Registry


def test_register_build_and_errors():
    reg = Registry("widget")

    @reg.register("Thing")
    def thing(size=1):
        return ("thing", size)

    assert reg.build("thing", size=3) == ("thing", 3)
    assert "THING" in reg and reg.names() == ["thing"] and len(reg) == 1
    with pytest.raises(KeyError, match="unknown widget 'other'; registered widgets: thing"):
        reg.get("other")
    with pytest.raises(KeyError, match="already registered"):
        reg.register("thing")(lambda: None)


def test_public_api_lists_and_creates_models():
    names = segzoo.list_models()
    assert "unet" in names and names == MODELS.names()
    model = segzoo.create_model("unet", num_classes=2, base_channels=4, depth=2)
    assert sum(p.numel() for p in model.parameters()) > 0
    assert {"synthetic", "camvid", "voc", "bsds500", "folder", "image_folder"} <= set(DATASETS.names())
    assert "supervised" in METHODS

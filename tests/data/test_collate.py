import pytest
import torch

from segzoo.data.collate import collate_samples


def _s(h, w, path="a", **extra):
    return {
        "image": torch.ones(3, h, w),
        "mask": torch.zeros(h, w, dtype=torch.long),
        "meta": {"path": path},
        **extra,
    }


def test_pads_to_largest_and_records_input_size():
    batch = collate_samples([_s(4, 5), _s(6, 3)], ignore_index=255)
    assert batch["image"].shape == (2, 3, 6, 5)
    assert batch["mask"].shape == (2, 6, 5)
    assert batch["meta"][0]["input_size"] == (4, 5) and batch["meta"][1]["input_size"] == (6, 3)
    assert (batch["mask"][0, 4:] == 255).all() and (batch["mask"][0, :4] == 0).all()
    assert (batch["image"][1, :, :, 3:] == 0).all()
    assert type(batch["image"]) is torch.Tensor


def test_variable_annotations_stay_lists_and_keypoints_stack():
    a = _s(4, 4, masks=torch.zeros(3, 4, 4), keypoints=torch.zeros(5, 2))
    b = _s(4, 4, masks=torch.zeros(5, 4, 4), keypoints=torch.ones(5, 2))
    batch = collate_samples([a, b])
    assert isinstance(batch["masks"], list) and [m.shape[0] for m in batch["masks"]] == [3, 5]
    assert batch["keypoints"].shape == (2, 5, 2)


def test_missing_key_in_some_samples_is_an_error():
    with pytest.raises(ValueError, match="have no 'mask'"):
        collate_samples([_s(2, 2), {"image": torch.ones(3, 2, 2), "meta": {"path": "b.png"}}])

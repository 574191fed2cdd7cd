import pytest
import torch

from segzoo.methods.schedules import cosine_with_warmup, poly_with_warmup


def _opt():
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)


def _lrs(schedule, steps):
    out = []
    for _ in range(steps):
        out.append(schedule.optimizer.param_groups[0]["lr"])
        schedule.optimizer.step()
        schedule.step()
    return out


def test_poly_with_warmup_values():
    lrs = _lrs(poly_with_warmup(_opt(), total_steps=10, warmup_steps=2, warmup_ratio=0.1, power=1.0), 10)
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[1] == pytest.approx(0.9 * 0.55)
    assert lrs[5] == pytest.approx(0.5)
    assert lrs[9] == pytest.approx(0.1)


def test_cosine_with_warmup_values():
    lrs = _lrs(cosine_with_warmup(_opt(), total_steps=12, warmup_steps=2), 12)
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0)
    assert lrs[2] == pytest.approx(1.0)
    assert lrs[7] == pytest.approx(0.5)


def test_bad_total_steps():
    with pytest.raises(ValueError, match="total_steps"):
        poly_with_warmup(_opt(), 0)

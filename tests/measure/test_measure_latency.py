import pytest
import torch
from torch import nn

from edgecompress.errors import RecipeError
from edgecompress.measure import measure_latency, torch_latency

KEYS = {"p50", "p90", "p99", "mean", "min", "iters"}


def _check_shape(result: dict, iters: int) -> None:
    assert set(result) == KEYS
    assert result["iters"] == iters
    assert 0 <= result["min"] <= result["p50"] <= result["p90"] <= result["p99"]
    assert result["min"] <= result["mean"]


def test_keys_order_and_call_count():
    calls = []
    result = measure_latency(lambda: calls.append(sum(range(200))), warmup=3, iters=20)
    _check_shape(result, 20)
    assert len(calls) == 23


def test_time_budget_still_times_at_least_five():
    assert measure_latency(lambda: None, warmup=10, iters=100, max_seconds=1e-9)["iters"] == 5
    assert measure_latency(lambda: None, iters=3, max_seconds=1e-9)["iters"] == 3


@pytest.mark.parametrize("kw", [{"warmup": -1}, {"iters": 0}, {"max_seconds": 0.0}])
def test_bad_settings(kw):
    with pytest.raises(RecipeError):
        measure_latency(lambda: None, **kw)


class Recorder(nn.Module):
    def __init__(self):
        super().__init__()
        self.seen = set()

    def forward(self, x):
        self.seen.add((torch.get_num_threads(), self.training, torch.is_grad_enabled()))
        return x * 2


def test_torch_latency_sets_and_restores_threads_and_mode():
    model = Recorder().train()
    before = torch.get_num_threads()
    result = torch_latency(model, (torch.ones(2),), threads=1, warmup=1, iters=6)
    _check_shape(result, 6)
    assert model.seen == {(1, False, False)}  # one thread, eval, no grad while timed
    assert torch.get_num_threads() == before and model.training


def test_torch_latency_restores_threads_after_an_error():
    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    before = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="boom"):
        torch_latency(Broken(), (torch.ones(1),), threads=1, warmup=0, iters=1)
    assert torch.get_num_threads() == before

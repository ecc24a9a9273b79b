"""fit / predict / evaluate_accuracy: learning, repeatability, schedules, hooks, custom losses, refusals."""

import copy

import pytest
import torch
import torch.nn.functional as F
from rich.progress import Progress
from torch import nn

from edgecompress.datasets import Dataset
from edgecompress.errors import DataError, EdgeCompressError, RecipeError
from edgecompress.testing.tiny_models import TinyConv1d, TinyMLP
from edgecompress.training import evaluate_accuracy, fit, predict


def _separable(n=300, labelled=True, seed=0):
    """Two classes split by a fixed hyperplane: TinyMLP learns it to ~100 %."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 20, generator=g)
    y = (x[:, :5].sum(1) > 0).long()
    cut = n * 4 // 5
    return Dataset("separable", x[:cut], y[:cut] if labelled else None, x[cut:], y[cut:] if labelled else None, 2)


def _model(seed=0):
    torch.manual_seed(seed)
    return TinyMLP(num_classes=2)


def test_fit_learns_and_leaves_the_model_in_eval_mode():
    data, model = _separable(), _model()
    before = evaluate_accuracy(model, data.x_test, data.y_test)
    losses = fit(model, data, epochs=15, lr=1e-2, batch_size=32)
    assert len(losses) == 15 and all(isinstance(v, float) for v in losses)
    assert losses[-1] < 0.3 * losses[0]  # measured 0.66 → 0.04
    after = evaluate_accuracy(model, data.x_test, data.y_test)
    assert after >= 0.9 and after > before + 0.2  # measured 0.95 (from ~0.5)
    assert not model.training


def test_fit_is_repeatable_and_leaves_the_global_generator_alone():
    data = _separable()
    a, b, c = _model(), _model(), _model()
    state = torch.get_rng_state()
    fit(a, data, epochs=2, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    fit(b, data, epochs=2, seed=3)
    fit(c, data, epochs=2, seed=4)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0, msg=name)
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters(), strict=True))


def _update_sizes(schedule):
    """Size of the first and the last optimizer update (Adam's update scales with the learning rate)."""
    data, model = _separable(), _model()
    sizes, previous = [], [p.detach().clone() for p in model.parameters()]

    def record():
        current = [p.detach().clone() for p in model.parameters()]
        sizes.append(sum((c - p).abs().sum().item() for c, p in zip(current, previous, strict=True)))
        previous[:] = current

    fit(model, data, epochs=3, lr=1e-2, batch_size=40, schedule=schedule, on_step=record)
    return sizes


def test_on_step_runs_after_every_step_and_cosine_decays_to_zero():
    cosine, constant = _update_sizes("cosine"), _update_sizes("constant")
    assert len(cosine) == len(constant) == 3 * 6  # 240 samples / 40 per batch, 3 epochs
    assert cosine[-1] < 0.02 * cosine[0]  # lr at the last step: 0.7 % of the peak
    assert constant[-1] > 0.2 * constant[0]


def test_on_step_can_keep_weights_masked():
    data, model = _separable(), _model()
    mask = torch.rand(model.fc1.weight.shape, generator=torch.Generator().manual_seed(0)) > 0.5

    @torch.no_grad()
    def keep_zeros():
        model.fc1.weight.mul_(mask)

    keep_zeros()
    fit(model, data, epochs=2, on_step=keep_zeros)
    assert torch.all(model.fc1.weight[~mask] == 0) and torch.any(model.fc1.weight[mask] != 0)


def test_custom_loss_trains_without_labels():
    teacher = _model(seed=1)
    fit(teacher, _separable(), epochs=10, lr=1e-2)
    data, student = _separable(labelled=False), _model(seed=2)
    seen_labels = []

    def distill(model, x, y):
        seen_labels.append(y)
        with torch.no_grad():
            target = F.softmax(teacher(x), dim=-1)
        return F.kl_div(F.log_softmax(model(x), dim=-1), target, reduction="batchmean")

    losses = fit(student, data, epochs=10, lr=1e-2, loss_fn=distill)
    assert losses[-1] < 0.3 * losses[0] and all(y is None for y in seen_labels)
    agreement = (predict(student, data.x_test).argmax(-1) == predict(teacher, data.x_test).argmax(-1)).float()
    assert agreement.mean() >= 0.85  # measured 0.95


def test_unlabelled_data_without_a_loss_is_refused():
    with pytest.raises(DataError, match="fine-tuning needs labels"):
        fit(_model(), _separable(labelled=False), epochs=1)


def test_zero_epochs_changes_nothing():
    model = _model().train()
    before = copy.deepcopy(model.state_dict())
    assert fit(model, _separable(), epochs=0) == []
    assert not model.training
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


@pytest.mark.parametrize("kwargs,match", [
    ({"epochs": -1}, "epochs must be 0 or more"),
    ({"epochs": 1, "lr": 0.0}, "learning rate must be a positive number"),
    ({"epochs": 1, "lr": float("nan")}, "learning rate must be a positive number"),
    ({"epochs": 1, "batch_size": 0}, "batch_size must be at least 1"),
    ({"epochs": 1, "weight_decay": -0.1}, "weight_decay must be 0 or more"),
    ({"epochs": 1, "schedule": "linear"}, r"unknown learning-rate schedule 'linear'; allowed: cosine, constant"),
])
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(RecipeError, match=match):
        fit(_model(), _separable(), **kwargs)


def test_a_diverging_loss_stops_training():
    def broken(model, x, y):
        return model(x).sum() * float("nan")

    with pytest.raises(EdgeCompressError, match=r"training diverged at epoch 1, step 1.*lower the learning rate"):
        fit(_model(), _separable(), epochs=1, loss_fn=broken)


def test_a_trailing_single_sample_batch_is_skipped_for_batch_norm():
    torch.manual_seed(0)
    model = TinyConv1d(num_classes=2)
    x = torch.randn(129, 1, 16)
    data = Dataset("odd", x, (x.mean((1, 2)) > 0).long(), x[:10], (x[:10].mean((1, 2)) > 0).long(), 2)
    steps = []
    fit(model, data, epochs=2, batch_size=64, on_step=lambda: steps.append(1))
    assert len(steps) == 4  # 64 + 64 per epoch; the 129th sample would make BatchNorm fail


def test_progress_has_one_task_over_all_steps():
    class Recording(Progress):
        def __init__(self):
            super().__init__(disable=True)
            self.created = []

        def add_task(self, description, *args, total=None, **kwargs):
            self.created.append((description, total))
            return super().add_task(description, *args, total=total, **kwargs)

    progress = Recording()
    fit(_model(), _separable(), epochs=3, batch_size=100, progress=progress, description="fine-tune")
    assert progress.created == [("fine-tune", 9)]  # 240 samples → 3 batches per epoch
    assert not progress.tasks  # removed when done


def test_predict_batches_match_one_pass_and_restore_the_mode():
    torch.manual_seed(0)
    model = TinyConv1d().train()
    x = torch.randn(37, 1, 16)
    out = predict(model, x, batch_size=8)
    assert model.training and not out.requires_grad
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(out, model(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(DataError, match="empty"):
        predict(model, x[:0])


def test_evaluate_accuracy_counts_exactly():
    logits = torch.eye(4).repeat(2, 1)  # predictions 0,1,2,3,0,1,2,3
    labels = torch.tensor([0, 1, 2, 3, 3, 3, 3, 3])
    assert evaluate_accuracy(nn.Identity(), logits, labels, batch_size=3) == pytest.approx(5 / 8)
    with pytest.raises(DataError, match="one label per sample"):
        evaluate_accuracy(nn.Identity(), logits, labels[:5])

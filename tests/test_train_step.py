"""The training loop's step guard: a step whose gradients are not finite is skipped and counted, not applied."""

import torch

from trainer.serve.runtime.scoring import FP32_PLAN
from trainer.train import _train_epoch, finite_gradients


class PoisonedGradient(torch.autograd.Function):
    """Identity forward; the backward of the calls listed in `poisoned` gives NaN (what a faulty kernel gave)."""

    calls = 0
    poisoned: set[int] = set()

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        PoisonedGradient.calls += 1
        return torch.full_like(grad, float("nan")) if PoisonedGradient.calls in PoisonedGradient.poisoned else grad


class Head(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        return PoisonedGradient.apply(self.fc(x))


def test_a_step_with_nan_gradients_is_skipped_and_counted_and_the_others_train():
    torch.manual_seed(0)
    head = Head()
    optimizer = torch.optim.AdamW(head.parameters(), lr=0.1)
    batches = [(torch.randn(8, 4), torch.randint(0, 2, (8,))) for _ in range(4)]
    PoisonedGradient.calls, PoisonedGradient.poisoned = 0, {2}
    before = [p.detach().clone() for p in head.parameters()]
    metrics = _train_epoch(torch.nn.Sequential(), head, batches, 1, optimizer, lambda: None, FP32_PLAN, "test")
    assert metrics["train_skipped_steps"] == 1
    assert all(torch.isfinite(p).all() for p in head.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, head.parameters()))  # the 3 good steps were applied
    assert optimizer.state[head.fc.weight]["step"] == 3


def test_finite_gradients():
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    assert finite_gradients(optimizer)  # no gradient yet: nothing to apply
    for value, finite in ((1.0, True), (float("inf"), False), (float("nan"), False)):
        weight.grad = torch.tensor([0.0, value, 0.0])
        assert finite_gradients(optimizer) is finite

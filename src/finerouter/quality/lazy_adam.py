"""The per-slot ("lazy") Adam of the quality estimator's phase 2: Adam over the rows of stacked adapter tensors,
touching only the rows a step used (:class:`LazyRowAdam`)."""

from __future__ import annotations

from typing import Any

from finerouter._training import import_torch

_FUSED_MIN_ROW = 4096  # rows at least this big are updated by torch's fused Adam kernel


class LazyRowAdam:
    """Adam over the rows (slots) of stacked parameter tensors, touching only the rows in each step.

    Each slot keeps its own step count, so bias correction is exact per slot, and slots that a batch does
    not use do not move (unlike dense Adam, whose momentum would keep moving them). ``weight_decay`` is the
    classic L2 term added to the gradient, as in ``torch.optim.Adam``.
    """

    def __init__(
        self,
        params: list[Any],
        lr: float,
        weight_decay: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        fused: bool = True,
    ) -> None:
        torch = import_torch()
        self.params = params
        self.lr, self.weight_decay, self.eps = lr, weight_decay, eps
        self.beta1, self.beta2 = betas
        self.first_moments = [torch.zeros_like(p) for p in params]
        self.second_moments = [torch.zeros_like(p) for p in params]
        self.steps = torch.zeros(params[0].shape[0], dtype=torch.float32, device=params[0].device)
        self._fused = hasattr(torch, "_fused_adam_") and params[0].device.type in ("cpu", "cuda") and fused

    def step(self, rows: Any, grads: list[Any], current: list[Any] | None = None) -> None:
        """Update ``param[rows]`` for each param given the gradients of those rows (same order).

        ``rows`` (a 1-D index tensor) must be unique; ``current`` optionally holds copies of ``param[rows]``
        already gathered (the fallback path updates them in place). With torch's fused Adam kernel the rows are
        updated in place through views (one pass over parameter, gradient and both moments); otherwise
        ``index_select`` / ``index_copy_`` move whole rows.
        """
        torch = import_torch()
        self.steps.index_add_(0, rows, torch.ones(rows.shape[0], device=rows.device))
        row_steps = self.steps.index_select(0, rows)
        correction1 = 1.0 - self.beta1**row_steps
        correction2 = 1.0 - self.beta2**row_steps
        if current is None:
            current = [None] * len(self.params)
        for param, first, second, grad, param_rows in zip(
            self.params, self.first_moments, self.second_moments, grads, current, strict=True
        ):
            if self._fused and param[0].numel() >= _FUSED_MIN_ROW:
                # Big rows (the first layers): the fused kernel, in place through row views. One call per
                # parameter tensor; small rows go the vectorised way (a kernel call per tiny row costs more).
                idx = rows.tolist()
                torch._fused_adam_(
                    [param[r] for r in idx], list(grad.unbind(0)), [first[r] for r in idx],
                    [second[r] for r in idx], [], [self.steps[r] for r in idx], lr=self.lr, beta1=self.beta1,
                    beta2=self.beta2, weight_decay=self.weight_decay, eps=self.eps, amsgrad=False, maximize=False,
                )  # fmt: skip
                continue
            if param_rows is None:
                param_rows = param.index_select(0, rows)
            shape = (-1,) + (1,) * (param.dim() - 1)
            if self.weight_decay:
                grad = grad.add(param_rows, alpha=self.weight_decay)
            first_rows = first.index_select(0, rows).mul_(self.beta1).add_(grad, alpha=1.0 - self.beta1)
            second_rows = second.index_select(0, rows).mul_(self.beta2).addcmul_(grad, grad, value=1.0 - self.beta2)
            first.index_copy_(0, rows, first_rows)
            second.index_copy_(0, rows, second_rows)
            denom = second_rows.div_(correction2.view(shape)).sqrt_().add_(self.eps)
            param_rows.addcdiv_(first_rows.div_(correction1.view(shape)), denom, value=-self.lr)
            param.index_copy_(0, rows, param_rows)


__all__ = ["LazyRowAdam"]

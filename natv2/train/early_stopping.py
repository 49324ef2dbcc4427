"""Step 1's early stopping of the fine-tuning (the thesis' ``LossEarlyStoppingMeter`` or
natv2's former top-1 rule)."""

from __future__ import annotations

import math


class EarlyStopping:
    """When step 1 stops, and which epoch step 2 trains for.

    ``stop_on="val_loss"``: the thesis' ``LossEarlyStoppingMeter`` (a loss above the best so far
    counts one bad epoch, any other resets the count and becomes the best); ``"val_top1"``: a
    top-1 not above the best so far counts one bad epoch. Stop when ``patience`` bad epochs are
    counted in a row. ``best_epoch`` is always that of the best validation top-1 (strictly higher
    wins: the earliest of equals), as the thesis' ``train`` returns it.
    """

    def __init__(self, stop_on: str, patience: int) -> None:
        if stop_on not in ("val_loss", "val_top1"):
            raise ValueError(f"stop_on {stop_on!r}; valid: val_loss, val_top1")
        self.stop_on, self.patience = stop_on, int(patience)
        self.best_loss = math.inf
        self.best_top1, self.best_epoch, self.bad = -math.inf, 0, 0

    def update(self, epoch: int, val_loss: float, val_top1: float) -> bool:
        """Record an epoch; True when training should stop."""
        improved_top1 = val_top1 > self.best_top1
        if improved_top1:
            self.best_top1, self.best_epoch = val_top1, int(epoch)
        if self.stop_on == "val_loss":
            if val_loss > self.best_loss:
                self.bad += 1
            else:
                self.best_loss, self.bad = val_loss, 0
        else:
            self.bad = 0 if improved_top1 else self.bad + 1
        return self.bad >= self.patience

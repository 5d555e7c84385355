"""What a fit chooses and records: ``FitParams`` (the table's recipe, and the sequence model's
blend weight and epochs) and the table's tuning ``GRID``. Shared by ``table_fit.py``, which
builds and tunes the table, and ``fit.py``, which runs a whole fit."""

from __future__ import annotations

import dataclasses

MODELS = ("neighbours", "transitions")
# γ (step decay), back (weight of the reverse direction), η (weight of the co-watch cosine).
GRID: tuple[dict, ...] = tuple({"gamma": g, "back": b, "eta": e}
                               for g in (0.7, 0.85) for b in (0.0, 0.25, 0.5) for e in (0.0, 0.3))


@dataclasses.dataclass(frozen=True)
class FitParams:
    model: str = "neighbours"
    gamma: float = 0.85
    back: float = 0.25
    eta: float = 0.3
    max_lead: int = 10
    max_user_titles: int = 200
    top_n: int = 100
    window: int = 10
    decay: float = 0.6
    popularity_weight: float = 1e-3
    sequence_weight: float = 0.0  # λ of the sequence model's blend (0: the table alone)
    sequence_epochs: int = 0  # epochs the sequence model trains on all the events

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {', '.join(MODELS)}, got {self.model!r}")
        if self.top_n < 1:
            raise ValueError(f"top_n must be at least 1, got {self.top_n}")

    def with_point(self, point: dict) -> "FitParams":
        return dataclasses.replace(self, **point)

    def recorded(self) -> dict:
        """What the model's ``params`` keep."""
        if self.model == "transitions":
            return {"model": "transitions", "top_n": self.top_n, "window": self.window, "decay": self.decay}
        return dataclasses.asdict(self)

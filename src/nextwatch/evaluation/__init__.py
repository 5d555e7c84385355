"""Offline evaluation: the leave-last-out split, full-ranking metrics and the baselines.
Pure NumPy, like the model it scores."""

from .baselines import Baseline, decayed_transition_model, popularity_model, transition_model
from .ranking_metrics import evaluate_scorer
from .protocol import Split, leave_last_out

__all__ = ["Baseline", "Split", "decayed_transition_model", "evaluate_scorer", "leave_last_out", "popularity_model",
           "transition_model"]

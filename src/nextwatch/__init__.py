"""nextwatch: real-time "what to watch next" recommendations.

Spark trains next-title models in batch from the event log; the Flask API records watches,
predicts the next title at once and serves it from a Redis cache.
"""

__version__ = "0.1.0"

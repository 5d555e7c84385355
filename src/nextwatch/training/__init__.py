"""Batch training on Spark. The only package that imports pyspark; it reaches Redis only
through ``store/`` and builds models with ``model/``, never touching the API or the service.

- ``spark.py``: the Spark session (loopback, no UI, small shuffles)
- ``sources.py``: event files and the live event log as one DataFrame
- ``transitions.py``: DataFrame transforms, events -> popularity and next-title candidates
- ``neighbours.py``: DataFrame transforms for the default table (multi-step transitions both
  ways, row-scaled, plus co-watch cosine)
- ``fit.py``: ``fit_next_title()``, events -> a tuned ``NextTitleModel``, without Redis; its
  parts: ``params.py`` (what a fit chooses), ``table_fit.py`` (the table, built and tuned),
  ``holdout.py`` (the inner holdout and the tuning sample), ``sequence_fit.py`` (the sequence
  model's tuning and final training; ``sequence_training.py`` trains the network, the PyTorch
  form in ``network.py``, on the engine ``engines.py`` picks), ``timing.py`` (each stage's time
  in the log)
- ``job.py``: ``train()``, which reads the sources, fits and publishes the model
"""

from .job import NoTrainingEvents, TrainingError, TrainingResult, train
from .spark import spark_session

__all__ = ["NoTrainingEvents", "TrainingError", "TrainingResult", "spark_session", "train"]

"""Batch training on Spark. The only package that imports pyspark; it reaches Redis only
through ``store/`` and builds models with ``model/``, never touching the API or the service.

- ``spark.py``: the Spark session (loopback, no UI, small shuffles)
- ``sources.py``: event files and the live event log as one DataFrame
- ``transitions.py``: DataFrame transforms, events -> popularity and next-title candidates
- ``job.py``: ``train()``, which publishes the model
"""

from .job import NoTrainingEvents, TrainingError, TrainingResult, train
from .spark import spark_session

__all__ = ["NoTrainingEvents", "TrainingError", "TrainingResult", "spark_session", "train"]

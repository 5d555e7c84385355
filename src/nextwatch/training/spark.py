"""The Spark session that training runs in: loopback only, no UI, sized for a small machine.

Left to its defaults Spark binds the driver to the machine's outside address, starts a web UI
on port 4040 and shuffles into 200 partitions; on a two-core box running tests or the demo
none of that is wanted. Everything here can be overridden through ``conf``.
"""

from __future__ import annotations

import os

from pyspark.sql import SparkSession

LOOPBACK = "127.0.0.1"

DEFAULT_CONF: dict[str, str] = {
    # The driver listens on loopback only, so executors of a local standalone cluster
    # (spark://127.0.0.1:PORT) reach it and nothing outside the machine can.
    "spark.driver.host": LOOPBACK,
    "spark.driver.bindAddress": LOOPBACK,
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    # 200 shuffle partitions (the default) is tuned for clusters; the event sets here are a
    # few million rows at most, and adaptive execution still merges small partitions.
    "spark.sql.shuffle.partitions": "8",
}


def spark_session(
    master: str = "local[2]", app_name: str = "nextwatch-train", log_level: str = "WARN", **conf: str
) -> SparkSession:
    """A SparkSession on ``master`` (``local[N]`` or ``spark://127.0.0.1:PORT``).

    ``conf`` holds extra Spark settings by their full names, e.g.
    ``spark_session(**{"spark.executor.memory": "1g"})``; they win over the defaults here.
    If a session already runs in this process Spark hands back that one (``getOrCreate``), with
    only the SQL settings of ``conf`` applied: the master of a running session cannot change.
    """
    # Spark's launcher reads SPARK_LOCAL_IP before any conf is applied; without it the block
    # manager and RPC servers still pick the outside interface.
    os.environ.setdefault("SPARK_LOCAL_IP", LOOPBACK)
    builder = SparkSession.builder.master(master).appName(app_name)
    for key, value in {**DEFAULT_CONF, **conf}.items():
        builder = builder.config(key, str(value))
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel(log_level)
    return session

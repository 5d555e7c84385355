"""The Spark session that training runs in: loopback only, no UI, sized for a small machine.

Left to its defaults Spark binds the driver to the machine's outside address, starts a web UI
on port 4040 and shuffles into 200 partitions; on a two-core box running tests or the demo
none of that is wanted. Everything here can be overridden through ``conf``.
"""

from __future__ import annotations

import os
import sys

from pyspark.sql import SparkSession

LOOPBACK = "127.0.0.1"

# The driver listens on loopback only when its executors run on this machine (local mode, or a
# standalone cluster at spark://127.0.0.1 or localhost), so that nothing outside can reach it.
# With a remote master (the compose stack's spark://spark-master:7077) executors must connect
# back to the driver, so Spark's own choice of address is kept there.
LOOPBACK_CONF: dict[str, str] = {
    "spark.driver.host": LOOPBACK,
    "spark.driver.bindAddress": LOOPBACK,
}

DEFAULT_CONF: dict[str, str] = {
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
    defaults = dict(DEFAULT_CONF)
    if runs_on_this_machine(master):
        # Spark's launcher reads SPARK_LOCAL_IP before any conf is applied; without it the
        # block manager and RPC servers still pick the outside interface.
        os.environ.setdefault("SPARK_LOCAL_IP", LOOPBACK)
        # Python tasks run in this interpreter (its venv has numpy and pyarrow), not whatever
        # `python3` comes first on the PATH.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        defaults.update(LOOPBACK_CONF)
    builder = SparkSession.builder.master(master).appName(app_name)
    for key, value in {**defaults, **conf}.items():
        builder = builder.config(key, str(value))
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel(log_level)
    return session


def runs_on_this_machine(master: str) -> bool:
    """True for local mode and for a standalone master on loopback."""
    return master.startswith("local") or master.split("://", 1)[-1].split(":")[0] in (LOOPBACK, "localhost")

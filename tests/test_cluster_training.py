"""The same training job on a standalone Spark cluster: a master and a worker started from the
pyspark package's own scripts, on loopback, trained against with spark://127.0.0.1:PORT."""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyspark
import requests

from nextwatch.datasets.demo import DemoConfig, write_demo_dataset
from nextwatch.localstack.redis_server import free_port
from nextwatch.localstack.supervisor import Supervisor


def cluster_env(tmp_path: Path) -> dict:
    return {
        "SPARK_HOME": os.path.dirname(pyspark.__file__),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_WORKER_DIR": str(tmp_path / "spark-work"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }


def alive_workers(ui_port: int) -> int:
    try:
        return requests.get(f"http://127.0.0.1:{ui_port}/json/", timeout=1).json()["aliveworkers"]
    except (requests.RequestException, ValueError, KeyError):
        return 0


def train(master: str, events: Path, settings, prefix: str) -> str:
    env = {**os.environ, "NEXTWATCH_REDIS_URL": settings.redis_url, "NEXTWATCH_KEY_PREFIX": prefix,
           "SPARK_LOCAL_IP": "127.0.0.1"}
    result = subprocess.run([sys.executable, "-m", "nextwatch.cli", "train", "--spark-master", master,
                             "--events", str(events), "--no-event-log"], env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_training_on_a_standalone_cluster_matches_local_mode(tmp_path, settings, redis_client):
    from nextwatch.store import Store

    dataset = write_demo_dataset(tmp_path / "demo", DemoConfig(titles=300, viewers=400, mean_watches=15))
    spark_class = str(Path(sys.executable).parent / "spark-class")
    rpc, master_ui, worker_ui = free_port(), free_port(), free_port()
    supervisor = Supervisor()
    try:
        supervisor.start("spark-master", [spark_class, "org.apache.spark.deploy.master.Master", "--host",
                                          "127.0.0.1", "--port", str(rpc), "--webui-port", str(master_ui)],
                         cluster_env(tmp_path))
        supervisor.start("spark-worker", [spark_class, "org.apache.spark.deploy.worker.Worker", "--host",
                                          "127.0.0.1", "--webui-port", str(worker_ui), "--cores", "1", "--memory",
                                          "1g", f"spark://127.0.0.1:{rpc}"], cluster_env(tmp_path))
        deadline = time.monotonic() + 120
        while alive_workers(master_ui) < 1:
            assert time.monotonic() < deadline, "the Spark worker did not register with the master"
            time.sleep(0.5)
        output = train(f"spark://127.0.0.1:{rpc}", dataset.events_path, settings, "cluster")
        assert "published model version 1" in output
        # The job really ran on the cluster: the master lists it as a completed application.
        completed = requests.get(f"http://127.0.0.1:{master_ui}/json/", timeout=5).json()["completedapps"]
        assert any(app["name"] == "nextwatch-train" for app in completed)
    finally:
        supervisor.stop_all()

    train("local[2]", dataset.events_path, settings, "local")
    on_cluster = Store.from_settings(settings.with_overrides(key_prefix="cluster"))
    local = Store.from_settings(settings.with_overrides(key_prefix="local"))
    cluster_model, local_model = on_cluster.models.load(1), local.models.load(1)
    assert on_cluster.catalog.all_ids() == local.catalog.all_ids()
    assert np.array_equal(cluster_model.neighbour_offsets, local_model.neighbour_offsets)
    assert np.array_equal(cluster_model.neighbour_codes, local_model.neighbour_codes)
    assert np.allclose(cluster_model.neighbour_scores, local_model.neighbour_scores)

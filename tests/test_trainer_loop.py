"""`nextwatch train --every`: trains on a schedule, survives a failed run, stops on SIGTERM."""

import signal
import subprocess
import sys
import threading
import time

from nextwatch.datasets.demo_dataset import DemoConfig, write_demo_dataset


def wait_for(condition, timeout, trainer):
    deadline = time.monotonic() + timeout
    while not condition():
        assert trainer.poll() is None, "the trainer exited"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_trains_on_schedule_and_stops_on_sigterm(tmp_path, settings, store):
    dataset = write_demo_dataset(tmp_path / "demo", DemoConfig(titles=200, viewers=100, mean_watches=10))
    late_file = tmp_path / "appears-later.csv"
    command = [sys.executable, "-m", "nextwatch.cli", "train", "--every", "1s", "--no-event-log",
               "--events", str(dataset.events_path), "--events", str(late_file)]
    env = {"NEXTWATCH_REDIS_URL": settings.redis_url, "NEXTWATCH_KEY_PREFIX": settings.key_prefix,
           "SPARK_LOCAL_IP": "127.0.0.1", "PATH": "/usr/bin:/bin"}
    trainer = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(trainer.stdout), daemon=True)
    reader.start()
    try:
        # The second file is missing: the run fails, says why, and the schedule goes on.
        wait_for(lambda: any("appears-later.csv" in line for line in lines), 120, trainer)
        assert store.models.current_version() == 0
        late_file.write_text("user_id,content_id,timestamp\nV1,C001,1.0\n")
        wait_for(lambda: store.models.current_version() >= 1, 60, trainer)
        first = store.models.current_version()
        wait_for(lambda: store.models.current_version() >= first + 2, 60, trainer)
    finally:
        trainer.send_signal(signal.SIGTERM)
        trainer.wait(timeout=60)
        reader.join(timeout=10)
    assert trainer.returncode == 0, "".join(lines)
    assert any("trainer stopped" in line for line in lines)

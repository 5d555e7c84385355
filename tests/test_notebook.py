"""notebooks/explore.ipynb: stored without outputs, and run top to bottom with nbclient against
a real stack on loopback: redis-server, a published model, the demo history, an archive written
by `nextwatch archive`, live events, and the API under gunicorn."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import requests

from conftest import DEFAULT_NEIGHBOURS, publish_test_model
from nextwatch.local_processes.redis_server import free_port
from nextwatch.local_processes.supervisor import Supervisor, http_ok

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "explore.ipynb"
KERNEL = "nextwatch-tests"


def test_the_notebook_is_stored_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, f"stored with outputs: {cell.source[:80]}"
    assert notebook.metadata.kernelspec.name == "python3"


@pytest.fixture
def notebook_stack(tmp_path, settings, store, monkeypatch):
    """The API serving a published model, with a history, an archive and live events; the
    NEXTWATCH_* variables of the kernel point at all of it."""
    from nextwatch.datasets.demo_dataset import DemoConfig, read_catalog, write_demo_dataset

    publish_test_model(store, DEFAULT_NEIGHBOURS)
    dataset = write_demo_dataset(tmp_path / "demo", DemoConfig(titles=150, viewers=300, mean_watches=12))
    store.catalog.save_info(read_catalog(dataset.catalog_path))
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    env = {"NEXTWATCH_REDIS_URL": settings.redis_url, "NEXTWATCH_KEY_PREFIX": settings.key_prefix,
           "NEXTWATCH_ARCHIVE_DIR": str(tmp_path / "archive"), "NEXTWATCH_DATA_DIR": str(tmp_path),
           "NEXTWATCH_SPARK_MASTER": "local[2]", "NEXTWATCH_API_URL": api, "SPARK_LOCAL_IP": "127.0.0.1",
           "MPLBACKEND": "Agg"}
    supervisor = Supervisor()
    try:
        supervisor.start("api", [sys.executable, "-m", "nextwatch.cli", "serve", "--port", str(port),
                                 "--workers", "1"], env, ready=http_ok(f"{api}/readyz"), timeout=60)
        watch(api, [("V1", "C1010"), ("V1", "C1045"), ("V2", "C1010"), ("V2", "C1045"), ("V3", "C005")])
        archived = subprocess.run([sys.executable, "-m", "nextwatch.cli", "archive", "--once"],
                                  env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
        assert archived.returncode == 0, archived.stdout + archived.stderr
        assert "archived 5 events" in archived.stdout
        watch(api, [("V3", "C006"), ("V4", "C1010")])  # live only: in the event log, not archived
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        yield api, dataset.events
    finally:
        supervisor.stop_all()


def watch(api: str, events: list[tuple[str, str]]) -> None:
    for user, title in events:
        answer = requests.post(f"{api}/watched", json={"user_id": user, "content_id": title}, timeout=5)
        assert answer.status_code == 200, answer.text


@pytest.fixture
def venv_kernel(tmp_path, monkeypatch) -> str:
    """A kernelspec for this interpreter (the venv's) in a folder of the test's own."""
    from ipykernel.kernelspec import install

    prefix = tmp_path / "jupyter"
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))  # searched before any other
    install(kernel_name=KERNEL, prefix=str(prefix))
    return KERNEL


def test_the_notebook_runs_top_to_bottom_against_a_live_stack(notebook_stack, venv_kernel, tmp_path):
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # Not stored: counts the figures the notebook drew (the Agg backend shows nothing).
    notebook.cells.append(nbformat.v4.new_code_cell(
        "import matplotlib.pyplot as plt\nprint('figures', len(plt.get_fignums()))"))
    NotebookClient(notebook, kernel_name=venv_kernel, timeout=240,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()

    printed = "\n".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                        for output in cell.outputs if output.output_type == "stream")
    api, history_events = notebook_stack
    # The history, and the 5 archived watches once although they are still in the event log too.
    assert "and 7 live events from the event log" in printed
    assert f"{history_events + 7} events, " in printed
    assert "figures 3" in printed  # popularity, next-title pairs, the evaluation
    assert "model (fit_next_title)" in printed and "popularity" in printed
    assert "GET /readyz 200" in printed and "POST /watched 200" in printed
    # The notebook's watch reached the API: its prediction is cached.
    assert requests.get(f"{api}/recommend/notebook-viewer", timeout=5).json()["cache_hit"] is True

"""`nextwatch serve` compiles the model's numba kernels before its workers start
(model/compiled.py). numba compiles one machine-code version per combination of argument types,
and an array that is read-only is a type of its own: a model loaded from Redis holds read-only
arrays, one fitted in memory does not. A warm-up that misses a combination the API uses leaves
the compile to the first request of every worker: seconds in which the worker answers nothing,
/metrics included.

The check runs in a fresh Python process (kernels compiled in this one by other tests would hide
a gap): it warms up, then serves a model published to and loaded from Redis through the real
app, every ranking path of a watch and a read, and reports any kernel type that the warm-up had
not prepared."""

from __future__ import annotations

import json
import subprocess
import sys

SERVE_AFTER_WARM_UP = r"""
import json, sys
import numpy as np
from nextwatch.model import blend_kernels, network_kernels
from nextwatch.model.compiled import compile_kernels


def kernel_types():
    return {f"{module.__name__}.{name}": {str(types) for types in kernel.signatures}
            for module in (network_kernels, blend_kernels) for name, kernel in vars(module).items()
            if hasattr(kernel, "signatures")}


compile_kernels()
warmed = kernel_types()

from nextwatch.api import create_app
from nextwatch.model import NextTitleModel
from nextwatch.model.sequence import SequenceModel
from nextwatch.settings import Settings
from nextwatch.store import Store

settings = Settings(redis_url=sys.argv[1], key_prefix=sys.argv[2], model_refresh_seconds=0)
store = Store.from_settings(settings)
titles = [f"C{i:03d}" for i in range(60)]
store.catalog.register(titles)
rng = np.random.default_rng(4)
neighbours = {code: [(int(t), float(s)) for t, s in zip(rng.choice(60, 6, replace=False), rng.random(6))]
              for code in range(60)}
table = NextTitleModel.from_neighbour_lists(np.linspace(1.0, 0.1, 60), neighbours)
model = NextTitleModel(table.popularity, table.neighbour_offsets, table.neighbour_codes, table.neighbour_scores,
                       sequence=SequenceModel.random(60, dim=16, blocks=2, max_length=50), sequence_weight=4.0)
store.models.publish(model)

client = create_app(settings, store).test_client()
answers = []
for title in ("C001", "C007", "C030"):  # the blend's top k (no filters)
    answers.append(client.post("/watched", json={"user_id": "U1", "content_id": title}))
answers.append(client.post("/watched?k=5&exclude=C002", json={"user_id": "U1", "content_id": "C031"}))  # filtered
answers.append(client.get("/recommend/U1?k=3&explain=true"))  # ranked again to explain
answers.append(client.get("/recommend/U1?k=60"))  # more than the cache holds: ranked again
shown = answers[-1].get_json()["recommendations"][:3]
for _ in range(settings.impression_cap):
    answers.append(client.post("/impressions", json={"user_id": "U1", "content_ids": shown}))
answers.append(client.post("/watched", json={"user_id": "U1", "content_id": "C032"}))  # with demoted titles
answers.append(client.get("/recommend/U2"))  # no history: popular titles
statuses = [answer.status_code for answer in answers]
sources = [answer.get_json().get("source") for answer in answers if answer.request.path != "/impressions"]
late = {name: sorted(types - warmed.get(name, set())) for name, types in kernel_types().items()}
print(json.dumps({"statuses": statuses, "sources": sources, "compiled_late": {n: t for n, t in late.items() if t}}))
"""


def test_the_warm_up_prepares_every_kernel_the_api_calls(settings, redis_client):
    result = subprocess.run([sys.executable, "-c", SERVE_AFTER_WARM_UP, settings.redis_url, settings.key_prefix],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(report["statuses"]) == {200}, report
    # The blend ranked (source "model"): the kernels were called, so the check below means something.
    assert report["sources"].count("model") >= 4, report
    assert report["compiled_late"] == {}, report

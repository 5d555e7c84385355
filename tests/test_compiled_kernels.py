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

import importlib
import json
import pkgutil
import subprocess
import sys
import types

from numba.core.dispatcher import Dispatcher

import nextwatch.model

SERVE_AFTER_WARM_UP = r"""
import json, sys
import numpy as np
from nextwatch.model import kernels
from nextwatch.model.compiled import compile_kernels


def kernel_types():
    return {f"{module.__name__}.{name}": {str(types) for types in kernel.signatures}
            for module in (kernels,) for name, kernel in vars(module).items()
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


def calls_into_other_files(module) -> list[str]:
    """``kernel -> callee`` for each compiled kernel of ``module`` that names a compiled kernel
    defined in another module (directly, or as an attribute of a module it imported)."""
    found = set()
    for name, kernel in vars(module).items():
        if not isinstance(kernel, Dispatcher) or kernel.py_func.__module__ != module.__name__:
            continue
        names = kernel.py_func.__code__.co_names
        for used in names:
            value = kernel.py_func.__globals__.get(used)
            candidates = [value]
            if isinstance(value, types.ModuleType):
                candidates = [getattr(value, attribute, None) for attribute in names]
            for callee in candidates:
                if isinstance(callee, Dispatcher) and callee.py_func.__module__ != module.__name__:
                    found.add(f"{module.__name__}.{name} -> {callee.py_func.__module__}.{callee.__name__}")
    return sorted(found)


def test_every_kernel_calls_only_kernels_of_its_own_file():
    """numba's cache checks the file of the function it compiled and no other (model/kernels.py's
    docstring): a kernel calling a kernel of another file would keep running that kernel's old
    machine code after its file changed."""
    modules = [importlib.import_module(f"nextwatch.model.{info.name}")
               for info in pkgutil.iter_modules(nextwatch.model.__path__)]
    kernel_count = sum(isinstance(value, Dispatcher) for module in modules for value in vars(module).values())
    assert kernel_count >= 10  # the check below looked at the kernels
    assert [call for module in modules for call in calls_into_other_files(module)] == []


def test_the_file_check_sees_a_call_into_another_file(tmp_path, monkeypatch):
    """The check above, on a module written to call a kernel of model/kernels.py."""
    (tmp_path / "caller_elsewhere.py").write_text(
        "import numba\nfrom nextwatch.model import kernels\nfrom nextwatch.model.kernels import _spread as spread\n\n"
        "@numba.njit\ndef direct(x):\n    return spread(x, x, 1.0)\n\n"
        "@numba.njit\ndef through_module(x):\n    return kernels._spread(x, x, 1.0)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("caller_elsewhere")
    assert calls_into_other_files(module) == [
        "caller_elsewhere.direct -> nextwatch.model.kernels._spread",
        "caller_elsewhere.through_module -> nextwatch.model.kernels._spread"]

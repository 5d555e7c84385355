"""The model scorer as it was at an earlier commit, imported from git, for side-by-side checks
(``sequence_cost.py``, ``scoring_equality.py``): no copy of the old code is kept.

``model_class(commit)`` writes that commit's ``src/nextwatch/model/{next_title,sequence}.py``
into a temporary package ``scorer_before`` and returns its ``NextTitleModel``; it loads the
same payloads as this tree's (``from_payload``).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile

BEFORE = "00bcb36"  # main when the fast blended scorer was written
MODULES = ("next_title.py", "sequence.py")


def model_class(commit: str = BEFORE):
    root = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True,
                          cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    package = os.path.join(tempfile.mkdtemp(prefix="scorer-before-"), "scorer_before")
    os.mkdir(package)
    open(os.path.join(package, "__init__.py"), "w").close()
    for name in MODULES:
        source = subprocess.run(["git", "show", f"{commit}:src/nextwatch/model/{name}"], capture_output=True,
                                text=True, check=True, cwd=root).stdout
        with open(os.path.join(package, name), "w") as handle:
            handle.write(source)
    spec = importlib.util.spec_from_file_location("scorer_before", os.path.join(package, "__init__.py"),
                                                  submodule_search_locations=[package])
    module = importlib.util.module_from_spec(spec)
    sys.modules["scorer_before"] = module
    spec.loader.exec_module(module)
    return importlib.import_module("scorer_before.next_title").NextTitleModel

"""Experiments (A/B tests of models): arms and their rules, a stable split, the statistics of the
report, the commands, and on live traffic through the API: responses carry the arm, each arm
serves its target, and a deliberately worse arm is detected as worse."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest

from conftest import DEFAULT_NEIGHBOURS, ON_BOTH_TOPOLOGIES, publish_test_model
from nextwatch.errors import Conflict, InvalidInput, NotFound
from nextwatch.service.experiments import (
    Arm, Experiment, Experiments, assignment_point, parse_arms, two_proportion_test, wilson_interval,
)


def test_arms_are_parsed_with_their_rules():
    assert parse_arms(["A=current:50", "B=12:30", "C=popular:20"]) == (
        Arm("A", "current", 50.0), Arm("B", "12", 30.0), Arm("C", "popular", 20.0))
    for bad, rule in ((["A=current:50"], "at least two arms"), (["A=current:50", "A=table:50"], "different names"),
                      (["A=current:60", "B=table:50"], "add up to 110"), (["A=latest:50", "B=table:50"], "target"),
                      (["A=current:0", "B=table:100"], "share"), (["A:current:50", "B=table:50"], "NAME=TARGET:SHARE"),
                      (["A=0:50", "B=table:50"], "target")):
        with pytest.raises(InvalidInput, match=rule):
            parse_arms(bad)


def test_assignment_is_stable_and_splits_near_the_shares():
    experiment = Experiment("e1", parse_arms(["A=current:50", "B=table:30", "C=popular:20"]), 0.0)
    users = [f"U{i}" for i in range(10_000)]
    first = [experiment.arm_for(u).name for u in users]
    assert first == [experiment.arm_for(u).name for u in users]  # stable
    for name, share in (("A", 0.5), ("B", 0.3), ("C", 0.2)):
        assert abs(first.count(name) / len(users) - share) <= 0.02
    # Another experiment splits the same users independently of this one.
    other = Experiment("e2", parse_arms(["A=current:50", "B=table:50"]), 0.0)
    in_a = [u for u, arm in zip(users, first) if arm == "A"]
    assert abs(sum(other.arm_for(u).name == "A" for u in in_a) / len(in_a) - 0.5) <= 0.03
    assert 0.0 <= assignment_point("e1", "U1") < 1.0


def test_the_statistics_match_the_textbook():
    # 120/1000 against 100/1000: pooled p = 0.11, z = 0.02 / sqrt(0.11 * 0.89 * 0.002) = 1.4293
    test = two_proportion_test(120, 1000, 100, 1000)
    assert math.isclose(test["z"], 1.4293, abs_tol=1e-4)
    assert math.isclose(test["p_value"], 0.1529, abs_tol=1e-4) and not test["significant"]
    assert two_proportion_test(300, 1000, 100, 1000)["significant"]
    low, high = wilson_interval(50, 100)
    assert math.isclose(low, 0.4038, abs_tol=1e-4) and math.isclose(high, 0.5962, abs_tol=1e-4)
    assert wilson_interval(0, 0) is None and two_proportion_test(1, 0, 1, 1)["p_value"] is None


@ON_BOTH_TOPOLOGIES
def test_start_stop_and_promote(store):
    experiments = Experiments(store)
    first = publish_test_model(store, DEFAULT_NEIGHBOURS)
    second = publish_test_model(store, DEFAULT_NEIGHBOURS)
    store.models.activate(first)
    with pytest.raises(NotFound, match="version 99 is not published"):
        experiments.start("x", ["A=current:50", "B=99:50"])
    experiments.start("x", ["A=current:50", f"B={second}:50"])
    assert experiments.running().name == "x"
    with pytest.raises(Conflict, match="running"):
        experiments.start("y", ["A=current:50", "B=table:50"])
    with pytest.raises(NotFound, match="no arm 'C'"):
        experiments.stop("x", promote="C")
    stopped = experiments.stop("x", promote="B")
    assert not stopped.running and stopped.promoted == "B" and store.models.current_version() == second
    assert experiments.running() is None
    with pytest.raises(Conflict, match="exists"):
        experiments.start("x", ["A=current:50", "B=table:50"])
    experiments.start("y", ["A=current:50", "B=popular:50"])
    with pytest.raises(InvalidInput, match="nothing to promote"):
        experiments.stop("y", promote="B")
    assert [e.name for e in experiments.all()] == ["x", "y"]


def test_the_commands(settings, store):
    publish_test_model(store, DEFAULT_NEIGHBOURS)
    env = {**os.environ, "NEXTWATCH_REDIS_URL": settings.redis_url, "NEXTWATCH_KEY_PREFIX": settings.key_prefix}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "nextwatch.cli", "experiments", *args], capture_output=True,
                              text=True, env=env, timeout=60)

    started = cli("start", "try-blend", "--arm", "A=current:50", "--arm", "B=table:50")
    assert started.returncode == 0 and "A -> current (50%)" in started.stdout, started.stderr
    assert "running" in cli("list").stdout
    assert "A " in cli("report", "try-blend").stdout
    bad = cli("start", "other", "--arm", "A=current:70", "--arm", "B=table:20")
    assert bad.returncode == 2 and "add up to 90" in bad.stderr
    assert cli("stop", "try-blend").returncode == 0
    assert "stopped" in cli("list").stdout


@pytest.fixture(scope="module")
def demo_world():
    """The demo generator's catalog and viewers: a model (decayed transitions) learned from the
    first 300 viewers, and the histories of 200 others, never seen by it, to replay live."""
    from nextwatch.datasets.demo_dataset import DemoConfig
    from nextwatch.datasets.demo_catalog import generate_catalog
    from nextwatch.datasets.demo_viewers import simulate_viewers
    from nextwatch.evaluation import decayed_transition_model

    config = DemoConfig(titles=300, viewers=500, mean_watches=12, seed=3)
    catalog = generate_catalog(config)
    viewers, titles, _timestamps = simulate_viewers(config, catalog)
    histories = [titles[viewers == v] for v in range(config.viewers)]
    model = decayed_transition_model(histories[:300], len(catalog)).model()
    return [t["content_id"] for t in catalog], model, histories[300:]


@ON_BOTH_TOPOLOGIES
def test_arms_serve_their_target_and_a_worse_arm_is_detected(client, store, demo_world):
    """Viewers the model never saw watch their titles through the API while an experiment splits
    them between the model (A) and popular titles (B): responses carry the arm, each arm serves
    its own target, and the report finds B significantly worse."""
    ids, model, replay = demo_world
    assert store.catalog.register(ids) == list(range(len(ids)))
    store.models.publish(model)
    experiments = Experiments(store)
    experiments.start("popular-check", ["A=current:50", "B=popular:50"])
    arms = {}
    for number, history in enumerate(replay):
        user = f"R{number}"
        for code in history.tolist():
            answer = client.post("/watched", json={"user_id": user, "content_id": ids[code]}).get_json()
        arms[user] = answer["arm"]
        assert answer["experiment"] == "popular-check"
        served = client.get(f"/recommend/{user}?k=3").get_json()
        assert served["arm"] == arms[user] and served["recommendation"] == answer["predicted_next"]
        if arms[user] == "B":  # popular titles the user has not watched, nothing else
            unwatched = [ids[c] for c in model.popular_order.tolist() if c not in set(history.tolist())]
            assert served["recommendations"] == unwatched[:3]
    report = experiments.report("popular-check")
    a, b = report["arms"]
    assert a["watches"] + b["watches"] == sum(len(h) for h in replay)
    assert {arms[u] for u in arms} == {"A", "B"}
    assert b["hit_rate"] < a["hit_rate"]
    test = b["against_A"]
    assert test["significant"] and test["difference"] < 0, report

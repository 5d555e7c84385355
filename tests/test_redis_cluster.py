"""The local Redis Cluster (local_processes/redis_cluster.py) with real redis-server processes:
it starts whole, spreads keys over its masters, survives a killed master, moves slots with their
keys, heals itself between tests, and says clearly when it cannot start."""

from __future__ import annotations

import time

import pytest
import redis
from redis.crc import key_slot

from nextwatch.local_processes.cluster_view import SLOTS, NodeReport, parse_cluster_nodes, slot_owner_fixes
from nextwatch.local_processes.redis_cluster import ClusterError, LocalRedisCluster
from nextwatch.settings import Settings, cluster_nodes

from conftest import cluster_client


def direct(member) -> redis.Redis:
    """A plain connection to one node, to see what it holds itself (no redirections)."""
    return redis.Redis(host=member.host, port=member.port)


def masters_and_replicas(cluster):
    members = cluster.nodes()
    return [m for m in members if m.role == "master"], [m for m in members if m.role == "replica"]


def test_the_cluster_has_three_masters_three_replicas_and_every_slot(clean_cluster, redis_cluster_client):
    masters, replicas = masters_and_replicas(clean_cluster)
    assert len(masters) == 3 and len(replicas) == 3
    owned = sorted(slot for master in masters for slot in master.slot_list())
    assert owned == list(range(SLOTS))  # every slot, none twice
    assert sorted(r.master_id for r in replicas) == sorted(m.node_id for m in masters)
    for member in masters + replicas:
        with direct(member) as node:
            assert node.execute_command("CLUSTER INFO")["cluster_state"] == "ok"
    assert clean_cluster.health_problems() == []
    assert clean_cluster.url == "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in clean_cluster.ports)
    assert len(clean_cluster.ports) == 6
    # The URL is what NEXTWATCH_REDIS_URL takes: settings accept it and read back every node.
    assert Settings(redis_url=clean_cluster.url).redis_url == clean_cluster.url
    assert cluster_nodes(clean_cluster.url)[0] == clean_cluster.startup_nodes

    # The replicas really replicate: a write reaches the owner's replica.
    redis_cluster_client.set("title:T1", "Heat")
    owner = clean_cluster.master_for_key("title:T1")
    follower = next(r for r in replicas if r.master_id == owner.node_id)
    with direct(owner) as node:
        assert node.wait(1, 5000) == 1
    with direct(follower) as node:
        node.execute_command("READONLY")
        assert node.get("title:T1") == b"Heat"


def test_keys_in_different_slots_land_on_different_masters(clean_cluster, redis_cluster_client):
    masters, _ = masters_and_replicas(clean_cluster)
    keys = [f"user:{i}" for i in range(100)]
    for key in keys:
        redis_cluster_client.set(key, key)
    owners = {key: clean_cluster.master_for_key(key) for key in keys}
    assert {owner.node_id for owner in owners.values()} == {m.node_id for m in masters}
    for key in keys:
        assert clean_cluster.keyslot(key) == key_slot(key.encode())  # the nodes and the client agree
    for master in masters:  # each master holds exactly the keys of its own slots
        with direct(master) as node:
            held = {key.decode() for key in node.keys("*")}
        assert held == {key for key, owner in owners.items() if owner.node_id == master.node_id}
    # A hash tag keeps one user's keys in one slot, so they can share a transaction or a script.
    assert clean_cluster.keyslot("{user:7}:history") == clean_cluster.keyslot("{user:7}:cache")


def test_a_killed_master_fails_over_to_its_replica_and_the_topology_heals(clean_cluster, redis_cluster_client):
    redis_cluster_client.set("user:42", "watched")
    slot = clean_cluster.keyslot("user:42")
    owner = clean_cluster.master_for_slot(slot)
    replica = next(m for m in clean_cluster.nodes() if m.master_id == owner.node_id)
    with direct(owner) as node:
        assert node.wait(1, 5000) == 1  # the replica has the key before its master dies

    clean_cluster.kill(owner)
    assert not clean_cluster.is_running(owner)
    promoted = clean_cluster.wait_for_failover(slot)

    assert promoted.node_id == replica.node_id and promoted.role == "master" and promoted.owns(slot)
    assert redis_cluster_client.get("user:42") == b"watched"  # the same client finds the new owner
    redis_cluster_client.set("user:42", "again")
    assert any("is not running" in problem for problem in clean_cluster.health_problems())

    clean_cluster.wait_until_healthy()
    assert clean_cluster.health_problems() == []
    masters, replicas = masters_and_replicas(clean_cluster)
    assert len(masters) == 3 and len(replicas) == 3
    old_owner = next(m for m in replicas if m.node_id == owner.node_id)
    assert old_owner.port == owner.port and old_owner.master_id == promoted.node_id
    assert redis_cluster_client.get("user:42") == b"again"


def test_a_reshard_moves_slots_and_their_keys_stay_readable(clean_cluster, redis_cluster_client):
    source, target = masters_and_replicas(clean_cluster)[0][:2]
    source_slots = set(source.slot_list())
    key_of_slot = {}  # one key in every slot the source owns
    for i in range(200_000):
        key = f"item:{i}"
        key_of_slot.setdefault(key_slot(key.encode()), key)
    key_of_slot = {slot: key for slot, key in key_of_slot.items() if slot in source_slots}
    assert len(key_of_slot) == len(source_slots)
    pipe = redis_cluster_client.pipeline()
    for key in key_of_slot.values():
        pipe.set(key, key)
    pipe.execute()

    moved = clean_cluster.reshard(source, target, 150)

    assert len(moved) == 150 and set(moved) <= source_slots
    with direct(target) as to_node, direct(source) as from_node:
        for slot in moved:
            assert clean_cluster.master_for_slot(slot).node_id == target.node_id
            assert to_node.execute_command("CLUSTER COUNTKEYSINSLOT", slot) == 1
            assert from_node.execute_command("CLUSTER COUNTKEYSINSLOT", slot) == 0
    values = redis_cluster_client.mget_nonatomic(list(key_of_slot.values()))
    assert values == [key.encode() for key in key_of_slot.values()]
    assert clean_cluster.health_problems() == []


def test_wait_until_healthy_moves_a_wandering_replica_back(clean_cluster):
    masters, replicas = masters_and_replicas(clean_cluster)
    wanderer = replicas[0]
    crowded = next(m for m in masters if m.node_id != wanderer.master_id)
    with direct(wanderer) as node:
        node.execute_command("CLUSTER REPLICATE", crowded.node_id)

    clean_cluster.wait_until_healthy()

    assert clean_cluster.health_problems() == []
    followers = {m.master_id for m in clean_cluster.nodes() if m.role == "replica"}
    assert followers == {m.node_id for m in masters}


def test_wait_until_healthy_closes_a_slot_a_reshard_left_open(clean_cluster, redis_cluster_client):
    source, target = masters_and_replicas(clean_cluster)[0][:2]
    slot = source.slots[0][0]
    with direct(target) as node:
        node.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source.node_id)
    with direct(source) as node:
        node.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target.node_id)
    assert any("open slots" in problem for problem in clean_cluster.health_problems())

    clean_cluster.wait_until_healthy()

    assert clean_cluster.health_problems() == []
    assert all(not m.open_slots for m in clean_cluster.nodes())


def give_away_every_slot(cluster, source, target) -> None:
    """Move every slot of ``source``, which must hold no keys, to ``target`` with the SETSLOT
    steps of redis-cli's reshard, each step pipelined over all slots. redis-cli walks the slots
    one at a time (seven round trips each): 12-35 s for 5461 slots on this busy 2-core machine.

    The source lets go of its slots before the target takes them, the reverse of redis-cli's order:
    pipelined, the source would go on claiming slots the target already took for as long as its own
    pipeline runs, and Redis 7.0 can hand such a slot back to the old owner in the target's own view,
    for good (see slot_owner_fixes in cluster_view.py). The target imports them meanwhile, so it
    ignores every claim on them until it takes them."""
    masters = [m for m in cluster.nodes() if m.role == "master"]
    steps = [(target, "IMPORTING", source.node_id), (source, "MIGRATING", target.node_id),
             (source, "NODE", target.node_id), (target, "NODE", target.node_id)]
    steps += [(m, "NODE", target.node_id) for m in masters if m.node_id not in (source.node_id, target.node_id)]
    for member, step, node_id in steps:
        with direct(member) as node:
            pipe = node.pipeline(transaction=False)
            for slot in source.slot_list():
                pipe.execute_command("CLUSTER SETSLOT", slot, step, node_id)
            pipe.execute()


def only_the_shape_is_wrong(problems: list[str]) -> bool:
    return len(problems) == 1 and problems[0].startswith("2 masters own slots, expected 3")


def test_a_master_that_lost_every_slot_gets_slots_back(clean_cluster, redis_cluster_client):
    source, target, other = masters_and_replicas(clean_cluster)[0]
    # Keys everywhere but on the master about to be emptied: the repair moves them into it.
    keys = [key for key in (f"user:{i}" for i in range(1000)) if not source.owns(key_slot(key.encode()))]
    redis_cluster_client.mset_nonatomic({key: key for key in keys})

    give_away_every_slot(clean_cluster, source, target)
    # Gossip spreads the move; then all agree, all are in sync and only the shape is wrong. One
    # answer judged, not two: a node that misses a PONG in between is flagged for a moment.
    deadline = time.monotonic() + 30
    while not only_the_shape_is_wrong(problems := clean_cluster.health_problems()):
        assert time.monotonic() < deadline, problems
        time.sleep(0.05)

    clean_cluster.wait_until_healthy()

    assert clean_cluster.health_problems() == []
    sizes = {m.node_id: m.slot_count for m in clean_cluster.nodes() if m.role == "master"}
    assert set(sizes) == {source.node_id, target.node_id, other.node_id} and min(sizes.values()) > 5000
    assert redis_cluster_client.mget_nonatomic(keys) == [key.encode() for key in keys]
    refilled = next(m for m in clean_cluster.nodes() if m.node_id == source.node_id)
    with direct(refilled) as node:  # the keys of the slots it got back moved in with them
        held = {key.decode() for key in node.keys("*")}
    assert held and held == {key for key in keys if refilled.owns(key_slot(key.encode()))}


def test_wait_until_healthy_gives_a_slot_no_master_claims_an_owner(tmp_path):
    # The state Redis 7.0 can leave after a reshard (see slot_owner_fixes): the master that owns a
    # slot records another as its owner, that one does not claim it either, the rest still name the
    # first. Gossip never settles it: no master claims the slot. On a cluster of its own: the
    # owner's replica keeps a stale mark on the slot (redis#12564), and after a failover in the
    # session's cluster the restarted old master would take the slot from it and drop it.
    with LocalRedisCluster(tmp_path).start() as cluster:
        owner, other = masters_and_replicas(cluster)[0][:2]
        slot = owner.slots[0][0]
        with direct(owner) as node:
            node.execute_command("CLUSTER SETSLOT", slot, "NODE", other.node_id)
        assert any("disagree" in problem for problem in cluster.health_problems())

        cluster.wait_until_healthy(timeout=30)

        assert cluster.health_problems() == []
        assert cluster.master_for_slot(slot).node_id == owner.node_id  # the owner most nodes named


def test_a_master_without_replicas_comes_back_with_its_data_from_the_aof(tmp_path):
    with LocalRedisCluster(tmp_path, replicas=0, appendonly=True, appendfsync="always").start() as cluster:
        assert len(cluster.nodes()) == 3 and cluster.health_problems() == []
        with cluster_client(cluster) as client:
            client.set("user:42", "kept")
            owner = cluster.master_for_key("user:42")

            cluster.kill(owner)
            cluster.restart(owner)
            cluster.wait_until_healthy()

            assert cluster.master_for_key("user:42").node_id == owner.node_id  # no replica to take over
            assert client.get("user:42") == b"kept"


def test_a_node_that_will_not_start_is_named_with_its_log(tmp_path):
    cluster = LocalRedisCluster(tmp_path, options={"no-such-directive": "1"})
    with pytest.raises(ClusterError, match=r"(?s)node-\d \(127\.0\.0\.1:\d+\) exited.*no-such-directive"):
        cluster.start(timeout=30)
    assert not any(cluster.is_running(port) for port in cluster.ports)  # nothing left behind


def test_a_used_folder_is_refused(tmp_path):
    (tmp_path / "node-1").mkdir()
    (tmp_path / "node-1" / "nodes.conf").write_text("an old cluster")
    with pytest.raises(ClusterError, match="node-1 is not empty"):
        LocalRedisCluster(tmp_path).start()


def test_cluster_nodes_lines_are_read_with_open_slots():
    text = (
        "a1 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-99 200 [101->-b2]\n"
        "b2 127.0.0.1:7002@17002 master,fail? - 0 0 2 connected 100-199 [101-<-a1]\n"
        "c3 127.0.0.1:7003@17003 slave a1 0 0 1 connected\n"
    )
    first, second, third = parse_cluster_nodes(text)
    assert (first.node_id, first.port, first.role, first.slot_count) == ("a1", 7001, "master", 101)
    assert first.owns(200) and not first.owns(150) and first.open_slots == ("[101->-b2]",)
    assert second.failing and second.slots == ((100, 199),)
    assert (third.role, third.master_id, third.slots, third.failing) == ("replica", "a1", (), False)


def view_of(me: str, slots_of: dict[str, str]) -> NodeReport:
    """What node ``me`` answers (CLUSTER NODES only): masters a1, b2 and c3 owning ``slots_of``,
    and r4, a replica of a1."""
    ports = {"a1": 7001, "b2": 7002, "c3": 7003, "r4": 7004}
    lines = [f"{name} 127.0.0.1:{ports[name]}@1{ports[name]} {'myself,' if name == me else ''}master - 0 0 1 "
             f"connected {slots}" for name, slots in slots_of.items()]
    lines.append(f"r4 127.0.0.1:7004@17004 {'myself,' if me == 'r4' else ''}slave a1 0 0 1 connected")
    return NodeReport(ports[me], {}, parse_cluster_nodes("\n".join(lines)), {})


def test_slot_owner_fixes_follow_the_masters_own_claims():
    agreed = {"a1": "0-5460", "b2": "5461-10922", "c3": "10923-16383"}
    b2_has_0 = {"a1": "1-5460", "b2": "0 5461-10922", "c3": "10923-16383"}
    # No master claims slot 0 (a1 says b2 has it, b2 says a1 has it): the owner most nodes name, a1.
    stuck = [view_of("a1", b2_has_0), view_of("b2", agreed), view_of("c3", agreed), view_of("r4", agreed)]
    assert slot_owner_fixes(stuck) == {7001: {0: "a1"}}
    # Only b2 claims slot 0: every master that names another owner records b2.
    assert slot_owner_fixes([view_of("a1", b2_has_0), view_of("b2", b2_has_0), view_of("c3", agreed)]) == {
        7003: {0: "b2"}}
    # Two masters claim it: their configEpochs decide. Only a replica lags: gossip brings it along.
    assert slot_owner_fixes([view_of("a1", agreed), view_of("b2", b2_has_0), view_of("c3", agreed)]) == {}
    assert slot_owner_fixes([view_of("a1", b2_has_0), view_of("b2", b2_has_0), view_of("c3", b2_has_0),
                             view_of("r4", agreed)]) == {}

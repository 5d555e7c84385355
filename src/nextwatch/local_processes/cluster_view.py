"""What the nodes of a Redis Cluster say about it, and whether that adds up to a healthy cluster.

Pure functions over the text of ``CLUSTER NODES``, ``CLUSTER INFO`` and ``INFO replication``;
redis_cluster.py asks the nodes, this module judges the answers.
"""

from __future__ import annotations

import collections
import dataclasses

SLOTS = 16384
NOT_RUNNING = "is not running"  # the report of a node whose process is down
OPEN_SLOTS = "sees open slots on"  # in the problem a slot left migrating or importing makes
# Flags under which a node is not a healthy member (``fail?`` is PFAIL: suspected by one node).
_BAD_FLAGS = {"fail", "fail?", "handshake", "noaddr"}


@dataclasses.dataclass(frozen=True)
class ClusterMember:
    """One line of ``CLUSTER NODES``: a node as one member of the cluster sees it."""

    node_id: str
    host: str
    port: int
    role: str  # "master" or "replica"
    master_id: str | None  # for a replica, the id of the master it follows
    slots: tuple[tuple[int, int], ...]  # inclusive ranges
    flags: frozenset[str]
    open_slots: tuple[str, ...]  # "[slot->-id]" (migrating) and "[slot-<-id]" (importing)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def slot_count(self) -> int:
        return sum(end - start + 1 for start, end in self.slots)

    @property
    def failing(self) -> bool:
        return bool(self.flags & _BAD_FLAGS)

    def owns(self, slot: int) -> bool:
        return any(start <= slot <= end for start, end in self.slots)

    def slot_list(self) -> list[int]:
        return [slot for start, end in self.slots for slot in range(start, end + 1)]

    def __str__(self) -> str:
        return f"{self.role} {self.address} ({self.node_id[:8]}, {self.slot_count} slots)"


@dataclasses.dataclass(frozen=True)
class NodeReport:
    """The answers of one running node: its cluster view and its replication link."""

    port: int
    info: dict[str, str]
    members: list[ClusterMember]
    replication: dict[str, str]


def parse_cluster_nodes(text: str) -> list[ClusterMember]:
    members = []
    for line in text.strip().splitlines():
        node_id, address, flags, master, _ping, _pong, _epoch, _link, *slot_fields = line.split()
        host, _, port = address.split("@")[0].rpartition(":")
        flag_set = frozenset(flags.split(","))
        slots, open_slots = [], []
        for field in slot_fields:
            if field.startswith("["):
                open_slots.append(field)
            else:
                start, _, end = field.partition("-")
                slots.append((int(start), int(end or start)))
        members.append(ClusterMember(
            node_id=node_id, host=host, port=int(port),
            role="master" if "master" in flag_set else "replica",
            master_id=None if master == "-" else master,
            slots=tuple(sorted(slots)), flags=flag_set, open_slots=tuple(open_slots),
        ))
    return sorted(members, key=lambda member: member.port)


def parse_info(text: str) -> dict[str, str]:
    """``INFO`` / ``CLUSTER INFO`` text -> {field: value}."""
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def layout(members: list[ClusterMember]) -> tuple:
    """What every node must agree on: who holds which slots and who follows whom."""
    return tuple((m.node_id, m.port, m.role, m.master_id, m.slots) for m in members)


def agreement_problems(reports: dict[int, NodeReport | str]) -> list[str]:
    """Why the running nodes do not (yet) share one healthy view; empty when they do."""
    problems = []
    for port, report in sorted(reports.items()):
        if isinstance(report, str):
            problems.append(f"node 127.0.0.1:{port} {report}")
            continue
        info = report.info
        if info.get("cluster_state") != "ok":
            problems.append(f"node 127.0.0.1:{port} says cluster_state:{info.get('cluster_state')}")
        for field in ("cluster_slots_assigned", "cluster_slots_ok"):
            if info.get(field) != str(SLOTS):
                problems.append(f"node 127.0.0.1:{port} says {field}:{info.get(field)}")
        for member in report.members:
            if member.failing:
                problems.append(f"node 127.0.0.1:{port} flags {member.address} {','.join(sorted(member.flags))}")
            if member.open_slots:
                problems.append(f"node 127.0.0.1:{port} {OPEN_SLOTS} {member.address}: {member.open_slots}")
    answered = [report for report in reports.values() if not isinstance(report, str)]
    if len({layout(report.members) for report in answered}) > 1:
        problems.append("the nodes disagree about slots or roles: " + "; ".join(
            f"127.0.0.1:{r.port} sees {', '.join(map(str, r.members))}" for r in answered))
    return problems


def shape_problems(report: NodeReport, reports: dict[int, NodeReport | str], masters: int,
                   replicas_per_master: int) -> list[str]:
    """Why an agreed view is not ``masters`` slot-owning masters with ``replicas_per_master``
    in-sync replicas each."""
    problems = []
    members = report.members
    if len(members) != masters * (1 + replicas_per_master):
        problems.append(f"{len(members)} nodes in the cluster, expected {masters * (1 + replicas_per_master)}")
    owners = [m for m in members if m.role == "master" and m.slot_count]
    if len(owners) != masters:
        problems.append(f"{len(owners)} masters own slots, expected {masters}: {', '.join(map(str, members))}")
    for owner in owners:
        followers = [m for m in members if m.master_id == owner.node_id]
        if len(followers) != replicas_per_master:
            problems.append(f"{owner} has {len(followers)} replicas, expected {replicas_per_master}")
    for member in members:
        replication = reports.get(member.port)
        if member.role != "replica" or isinstance(replication, str) or replication is None:
            continue
        link = replication.replication
        if link.get("master_link_status") != "up" or link.get("master_sync_in_progress") != "0":
            problems.append(f"replica {member.address}: master_link_status:{link.get('master_link_status')}, "
                            f"master_sync_in_progress:{link.get('master_sync_in_progress')}")
    return problems


def replica_moves(members: list[ClusterMember], replicas_per_master: int) -> list[tuple[ClusterMember, str]]:
    """(replica, new master id) pairs that give every slot-owning master its share of replicas,
    taking them from masters that have too many or own no slots."""
    owners = [m for m in members if m.role == "master" and m.slot_count]
    followers = {owner.node_id: [m for m in members if m.master_id == owner.node_id] for owner in owners}
    spare = [m for m in members if m.role == "replica" and m.master_id not in followers]
    for replicas in followers.values():
        spare.extend(replicas[replicas_per_master:])
    moves = []
    for owner in owners:
        for _ in range(replicas_per_master - len(followers[owner.node_id])):
            if spare:
                moves.append((spare.pop(), owner.node_id))
    return moves


def slot_owner_claims(reports: dict[int, NodeReport | str], slot: int) -> dict[int, int | str]:
    """Node port -> the port of the live master it says owns ``slot`` (an int), or why it names
    none (a str). A failover is over when every running node names the same running master."""
    claims: dict[int, int | str] = {}
    for port, report in reports.items():
        if isinstance(report, str):
            claims[port] = report
        elif report.info.get("cluster_state") != "ok":
            claims[port] = f"cluster_state:{report.info.get('cluster_state')}"
        else:
            owners = [m.port for m in report.members if m.role == "master" and m.owns(slot) and not m.failing]
            claims[port] = owners[0] if owners else f"no live master owns slot {slot}"
    return claims


def slot_owner_fixes(reports: list[NodeReport]) -> dict[int, dict[int, str]]:
    """{port of a master: {slot: id of the owner it must record}} for every slot the nodes name
    different owners for, where the masters' own claims settle who owns it: the one master that
    claims it or, when none does, the owner most nodes name. Slots two masters claim are left to
    Redis's configEpoch rule; replicas take no SETSLOT, they follow the owner's claims.

    Gossip alone never settles a slot no master claims, and Redis 7.0 leaves one behind now and then:
    a node keeps a stale "its owner stopped claiming it" mark on a slot (redis#12564, fixed in 7.2.4
    only), SETSLOT does not clear it, and a claim carrying that mark wins whatever its configEpoch.
    So when the old owner of a slot still claims it just after the new owner took it with SETSLOT,
    the new owner hands it back in its own view, the old owner then lets it go as told, and the new
    owner names the old one while everyone else names the new one, for good."""
    seen = {report.port: owner_of_each_slot(report.members) for report in reports}
    masters = {}  # port -> the master's own line: the slots it claims
    for report in reports:
        me = next(member for member in report.members if "myself" in member.flags)
        if me.role == "master":
            masters[report.port] = me
    fixes: dict[int, dict[int, str]] = {}
    for slot, named in enumerate(zip(*seen.values())):
        if len(set(named)) == 1:
            continue
        claimants = [me.node_id for me in masters.values() if me.owns(slot)]
        if len(claimants) > 1:
            continue
        owner = claimants[0] if claimants else collections.Counter(named).most_common(1)[0][0]
        for port in masters:
            if owner is not None and seen[port][slot] != owner:
                fixes.setdefault(port, {})[slot] = owner
    return fixes


def owner_of_each_slot(members: list[ClusterMember]) -> list[str | None]:
    """Slot -> the node id one view names as its owner (None: unassigned)."""
    owners: list[str | None] = [None] * SLOTS
    for member in members:
        if member.role == "master":
            for start, end in member.slots:
                owners[start:end + 1] = [member.node_id] * (end - start + 1)
    return owners

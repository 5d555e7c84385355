"""The evaluation split: leave the last event out, and the one before it for validation.

The protocol, which ``/work/shared/tools/reference_baselines.py`` writes out plainly and whose
figures ours must reproduce:

1. every event is implicit feedback (a rating is a watch);
2. users and titles with fewer than ``min_count`` events are dropped, in one pass over the
   counts of the whole file (as SASRec's preprocessing does; a survivor may end up below it);
3. each user's events are put in time order, equal timestamps in file order;
4. users with at least ``min_user_events`` events are evaluated: the last event is the test
   target, the one before it the validation target;
5. the title codes are the surviving content ids in sorted order.

Models chosen on validation are trained on the events before the validation target; the test
figures come from a model trained on everything before the test target.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..datasets.events import Events

__all__ = ["Split", "leave_last_out"]


@dataclasses.dataclass(frozen=True)
class Split:
    items: np.ndarray  # content id of every title code (sorted ids)
    users: np.ndarray  # user id of every evaluated user (sorted ids)
    validation_histories: list[np.ndarray]  # per user, title codes before the validation target
    validation_targets: np.ndarray  # int32, per user
    test_histories: list[np.ndarray]  # per user, title codes before the test target
    test_targets: np.ndarray  # int32, per user
    events: int  # events left after the filter, including those of users not evaluated

    @property
    def n_items(self) -> int:
        return len(self.items)


def leave_last_out(events: Events, min_count: int = 5, min_user_events: int = 3) -> Split:
    """Filter, order and split ``events`` as the protocol above says."""
    if min_user_events < 3:
        raise ValueError(f"min_user_events must be at least 3 (history, validation, test), got {min_user_events}")
    user, content = events.user_codes, events.content_codes
    user_counts = np.bincount(user, minlength=len(events.user_ids))
    content_counts = np.bincount(content, minlength=len(events.content_ids))
    keep = (user_counts[user] >= min_count) & (content_counts[content] >= min_count)
    user_rank, users = _sorted_codes(user[keep], events.user_ids)
    item, items = _sorted_codes(content[keep], events.content_ids)

    order = np.lexsort((events.sequence[keep], events.timestamp[keep], user_rank))
    user_rank, item = user_rank[order], item[order].astype(np.int32)
    starts = np.flatnonzero(np.r_[True, user_rank[1:] != user_rank[:-1]])
    lengths = np.diff(np.r_[starts, len(item)])
    evaluated = lengths >= min_user_events
    sequences = [item[s: s + n] for s, n in zip(starts[evaluated], lengths[evaluated])]
    return Split(
        items=items,
        users=users[user_rank[starts[evaluated]]],
        validation_histories=[s[:-2] for s in sequences],
        validation_targets=np.array([s[-2] for s in sequences], dtype=np.int32),
        test_histories=[s[:-1] for s in sequences],
        test_targets=np.array([s[-1] for s in sequences], dtype=np.int32),
        events=int(keep.sum()),
    )


def _sorted_codes(codes: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Recode ``codes`` (indexes into ``ids``) so the used ids come in sorted order; returns
    the new codes and the used ids."""
    used = np.unique(codes)
    by_id = np.argsort(ids[used].astype(str), kind="stable")
    recode = np.empty(len(ids), dtype=np.int64)
    recode[used[by_id]] = np.arange(len(used))
    return recode[codes], ids[used[by_id]]

from __future__ import annotations

import itertools

from stepline.core.status import ALLOWED_FROM, FINAL, TaskStatus, can_move

S = TaskStatus


def test_the_main_path_is_allowed() -> None:
    assert can_move(S.created, S.queued)
    assert can_move(S.queued, S.in_progress)
    for end in FINAL:
        assert can_move(S.in_progress, end)


def test_a_finished_task_cannot_start_again_without_a_reset() -> None:
    for end in FINAL:
        assert not can_move(end, S.in_progress)
        assert not can_move(end, S.queued)
        assert can_move(end, S.created)  # reset


def test_no_status_moves_to_itself() -> None:
    for s in S:
        assert not can_move(s, s)


def test_flags_and_names_are_not_targets() -> None:
    for name in (S.published, S.publishing, S.closed, S.unknown):
        assert name not in ALLOWED_FROM
        assert not any(can_move(a, name) for a in S)


def test_transition_table_only_names_real_statuses() -> None:
    pairs = [(a, b) for b, froms in ALLOWED_FROM.items() for a in froms]
    assert pairs
    assert all(isinstance(a, S) and isinstance(b, S) for a, b in pairs)
    assert len(set(itertools.chain(*pairs))) >= 5

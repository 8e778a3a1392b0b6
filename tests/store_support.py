"""Store set-ups and reads only the tests need (the library has no use for them)."""

from __future__ import annotations

from collections.abc import Iterable

from almdn.projects.store import Store


def move_to_pool(store: Store, image_ids: Iterable[int]) -> None:
    """Put images back in the pool (their labels stay): a project without labeled images."""
    with store.transaction() as conn:
        conn.executemany("UPDATE images SET split = 'pool' WHERE id = ?", [(int(i),) for i in image_ids])

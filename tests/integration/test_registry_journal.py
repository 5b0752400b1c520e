"""The registry's journal, against Cassandra: what each write records, and a reader's
bookkeeping (each entry once, again after a retry, an idle journal not read from further
back each time)."""

from __future__ import annotations

import time
import uuid

from m2m.cassandra import Database
from m2m.registry.journal import JournalEntry, JournalReader
from m2m.registry.node import RegistryNode


def journaled(database: Database) -> Database:
    """The same session, with the journal on (as a platform with sync has it)."""
    return Database(database.cluster, database.session, database.keyspace, 64, True)


def of(entries: list[JournalEntry], root: str) -> list[tuple[str, frozenset[str], bool]]:
    return [(e.path, e.removed, e.erased) for e in entries if e.path.startswith(root)]


async def test_each_write_records_its_node_and_a_removal_what_went(database: Database) -> None:
    database = journaled(database)
    root = f"/journal-{uuid.uuid4().hex[:8]}/"
    reader = JournalReader(database, since=time.time())
    node = RegistryNode(database, f"{root}a/")
    await node.create()  # the root is created too
    await node.set_values({"x": "1", "y": "2"})
    await node.delete_values(["x"])
    await node.delete(hard=True)
    entries = await reader.read()
    assert sorted(of(entries, root)) == sorted([
        (root, frozenset(), False),
        (node.path, frozenset(), False),
        (node.path, frozenset(), False),
        (node.path, frozenset({"x"}), False),
        (node.path, frozenset(), True),
    ])  # fmt: skip
    stamps = [e.stamp for e in entries if e.path == node.path]
    assert stamps == sorted(stamps)  # in the order written
    reader.done(entries)
    assert of(await reader.read(), root) == []  # each once
    await RegistryNode(database, root).delete(hard=True)


async def test_entries_not_handled_are_read_again(database: Database) -> None:
    database = journaled(database)
    root = f"/journal-{uuid.uuid4().hex[:8]}/"
    reader = JournalReader(database, since=time.time())
    await RegistryNode(database, root).create()
    entries = await reader.read()
    reader.retry(entries)
    assert of(await reader.read(), root) == [(root, frozenset(), False)]
    await RegistryNode(database, root).delete(hard=True)


async def test_an_idle_reader_moves_on_and_a_journal_off_records_nothing(
    database: Database,
) -> None:
    reader = JournalReader(journaled(database), since=time.time() - 3600)
    reader.done(await reader.read())
    assert reader.since > time.time() - 60  # the next read starts from now, not an hour ago
    root = f"/journal-{uuid.uuid4().hex[:8]}/"
    await RegistryNode(database, root).create()  # the suite's database keeps no journal
    assert of(await reader.read(), root) == []
    await RegistryNode(database, root).delete(hard=True)

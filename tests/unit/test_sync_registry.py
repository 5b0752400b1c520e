"""Registry sync's pure parts: cells as messages, what beats what, what is synced which way."""

from __future__ import annotations

import json
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from m2m.bus.envelope import InvalidMessage
from m2m.config import SyncRules
from m2m.registry.device import device_id_for
from m2m.registry.journal import JournalReader, journal_write
from m2m.sync.cells import FileBlock, NodeCells, cell_writes, newer_than_sent
from m2m.sync.rules import SyncedNode, local_values, synced_node

DEVICE = str(uuid.UUID(int=7))
SETTINGS = f"/device/{DEVICE}/settings/"
FILE = "/firmware/f1/file/"


def test_cells_travel_as_message_fields_and_come_back_the_same() -> None:
    cells = NodeCells(SETTINGS, (100, 5), {"period": ("60", 7), "mode": ("é", 9)}, {"x": 11})
    fields = json.loads(json.dumps(cells.to_fields()))
    assert NodeCells.of_fields(fields) == cells
    erased = NodeCells(SETTINGS, erased=12)
    assert NodeCells.of_fields(erased.to_fields()) == erased
    block = NodeCells(FILE, (100, 5), blocks=3, block=FileBlock(2, b"\0\xff firmware", 8))
    assert NodeCells.of_fields(json.loads(json.dumps(block.to_fields()))) == block


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"path": "no-slash"},
        {"path": SETTINGS, "status": [100]},
        {"path": SETTINGS, "status": [True, 1]},
        {"path": SETTINGS, "status": [100, -1]},
        {"path": SETTINGS, "values": {"a": ["1", "2"]}},
        {"path": SETTINGS, "values": {"a": "1"}},
        {"path": SETTINGS, "values": ["a"]},
        {"path": SETTINGS, "values": {"a": ["\ud800", 1]}},
        {"path": SETTINGS, "removed": {"\udfff": 1}},
        {"path": SETTINGS, "erased": 1.5},
        {"path": SETTINGS, "blocks": -1},
        {"path": SETTINGS, "block": {"index": 0, "data": "not base64!", "time": 1}},
        {"path": SETTINGS, "block": {"index": 0, "data": "AA==", "time": "1"}},
        {"path": SETTINGS, "block": "AA=="},
    ],
)
def test_what_is_not_cells_is_refused_as_an_invalid_message(fields: dict[str, object]) -> None:
    with pytest.raises(InvalidMessage):
        NodeCells.of_fields(fields)


TEXT = st.text(st.characters(exclude_categories=()))
"""Any text JSON decodes to, lone surrogates included (``"\\ud800"``)."""
FIELD_NAMES = st.sampled_from(["path", "status", "values", "removed", "erased", "blocks",
                               "block"]) | TEXT  # fmt: skip


@given(st.dictionaries(FIELD_NAMES, st.recursive(st.none() | st.integers() | TEXT,
       lambda inner: st.lists(inner) | st.dictionaries(TEXT, inner))))  # fmt: skip
def test_any_decoded_json_is_cells_or_an_invalid_message(fields: dict[str, object]) -> None:
    try:
        cells = NodeCells.of_fields({"path": SETTINGS, **fields} if fields else fields)
    except InvalidMessage:
        return
    assert NodeCells.of_fields(cells.to_fields()) == cells  # what is taken travels as it is
    assert all(param is not None for _, params in cell_writes(cells) for param in params)


def test_the_digest_covers_values_and_write_times_but_not_removals() -> None:
    base = NodeCells(SETTINGS, (100, 5), {"period": ("60", 7)})
    assert base.digest() == NodeCells(SETTINGS, (100, 5), {"period": ("60", 7)}, {"x": 1}).digest()
    assert base.digest() != NodeCells(SETTINGS, (100, 5), {"period": ("61", 7)}).digest()
    assert base.digest() != NodeCells(SETTINGS, (100, 5), {"period": ("60", 8)}).digest()
    assert base.digest() != NodeCells(SETTINGS, (100, 6), {"period": ("60", 7)}).digest()
    split_one_way = NodeCells(SETTINGS, values={"a": ("b\0c", 1)})
    split_another = NodeCells(SETTINGS, values={"a\0b": ("c", 1)})
    assert split_one_way.digest() != split_another.digest()


def test_what_was_sent_and_took_needs_no_answer() -> None:
    sent = NodeCells(SETTINGS, (100, 5), {"period": ("60", 7)}, {"old": 8})
    assert newer_than_sent(sent, NodeCells(SETTINGS, (100, 5), {"period": ("60", 7)})) is None


def test_a_newer_value_here_is_the_answer() -> None:
    sent = NodeCells(SETTINGS, values={"period": ("60", 7)}, removed={"mode": 8})
    held = NodeCells(SETTINGS, (100, 5), {"period": ("30", 9), "mode": ("day", 10)})
    answer = newer_than_sent(sent, held)
    assert answer == NodeCells(SETTINGS, values={"period": ("30", 9), "mode": ("day", 10)})


def test_a_value_removed_here_later_is_removed_there_just_after_it_was_written() -> None:
    sent = NodeCells(SETTINGS, (100, 5), {"period": ("60", 7), "mode": ("day", 8)})
    held = NodeCells(SETTINGS, (100, 5), {"period": ("60", 7)})
    assert newer_than_sent(sent, held) == NodeCells(SETTINGS, removed={"mode": 9})


def test_a_node_erased_here_later_than_anything_sent_is_erased_there() -> None:
    sent = NodeCells(SETTINGS, (100, 5), {"period": ("60", 7)})
    assert newer_than_sent(sent, NodeCells(SETTINGS)) == NodeCells(SETTINGS, erased=8)


def test_cells_are_written_with_their_own_times_and_list_the_node_in_its_parent() -> None:
    writes = cell_writes(NodeCells(SETTINGS, (100, 5), {"a": ("1", 7), "b": ("2", 7)}, {"c": 9}))
    assert [params for _, params in writes] == [
        (5, 100, SETTINGS),
        (f"/device/{DEVICE}/", "settings", 5),
        (7, {"a": "1", "b": "2"}, SETTINGS),
        (9, {"c"}, SETTINGS),
    ]
    assert all("USING TIMESTAMP" in cql for cql, _ in writes)


def test_a_devices_nodes_are_synced_by_kind() -> None:
    ident = "imei:42"
    assert synced_node(f"/device/{DEVICE}/") == SyncedNode("device", DEVICE)
    assert synced_node(SETTINGS) == SyncedNode("settings", DEVICE)
    assert synced_node(f"/device/{DEVICE}/settings-ack-time/") == SyncedNode("settings", DEVICE)
    assert synced_node(f"/device/{DEVICE}/status/") == SyncedNode("status", DEVICE)
    assert synced_node(f"/device/{DEVICE}/listed-sensors/t/") == SyncedNode("sensors", DEVICE)
    assert synced_node(f"/device/by-ident/{ident}/") == SyncedNode("device", device_id_for(ident))
    assert synced_node("/device/default/channel-translation/") == SyncedNode("routes", None)
    assert synced_node(FILE) == SyncedNode("firmware", None)
    assert synced_node("/firmware/by-name/") == SyncedNode("firmware", None)
    for unsynced in ("/", "/device/", "/device/by-ident/", "/domain/x/", "/.sync/uplink/",
                     f"/device/{DEVICE}/unknown/", "/device/not-a-uuid/settings/"):  # fmt: skip
        assert synced_node(unsynced) is None
    assert local_values(f"/device/{DEVICE}/") == {"domain"}
    assert local_values(SETTINGS) == frozenset()


def test_a_kind_going_the_other_way_carries_only_whether_the_node_exists() -> None:
    cells = NodeCells(f"/device/{DEVICE}/status/", (100, 5), {"battery": ("80", 7)})
    status = SyncedNode("status", DEVICE)
    rules = SyncRules()  # status: up
    assert status.carried(cells, rules, "up") == cells
    assert status.carried(cells, rules, "down") == NodeCells(cells.path, (100, 5))
    assert status.carried(cells, SyncRules(status="none"), "up") is None
    assert status.carried(NodeCells(cells.path, values=cells.values), rules, "down") is None


def test_a_complete_file_is_one_whose_flags_say_so() -> None:
    flags = {".is_file": ("1", 1), "getOk": ("1", 2)}
    assert NodeCells(FILE, values=flags).is_complete_file
    assert not NodeCells(FILE, values={".is_file": ("1", 1)}).is_complete_file
    assert not NodeCells(FILE, values={**flags, "getOk": ("0", 3)}).is_complete_file


def test_a_journal_entry_names_its_minute_and_keeps_the_removal_time() -> None:
    _, (minute, time_uuid, path, stamp, removed, erased) = journal_write(
        SETTINGS, 90_000_000, ["a"]
    )
    assert (minute, path, stamp, removed, erased) == (1, SETTINGS, 90_000_000, {"a"}, None)
    assert time_uuid.version == 1
    assert journal_write(SETTINGS, 1, erased=True)[1][4:] == (None, True)


def test_a_journal_reader_starts_where_it_was_told() -> None:
    reader = JournalReader(database=None, since=1234.5)  # type: ignore[arg-type]
    assert reader.since == 1234.5

"""Registry nodes on the real Cassandra: lifecycle, values, children, delete, copy, JSON.

Every test works under its own fresh top-level node, so tests share the keyspace safely.
"""

from __future__ import annotations

import asyncio
import re
import uuid

import pytest

from m2m.cassandra import Database
from m2m.registry import (
    InvalidPathError,
    InvalidTreeError,
    NodeExistsError,
    NodeNotFoundError,
    NodeStatus,
    RegistryNode,
    cleanup,
    export_tree,
    import_tree,
)


@pytest.fixture
def base(database: Database) -> RegistryNode:
    """A top-level node no other test uses (not created yet)."""
    return RegistryNode(database, f"/test-{uuid.uuid4().hex[:12]}")


async def _rows(database: Database, table: str, path: str) -> int:
    rows = await database.execute(f"SELECT COUNT(*) AS n FROM {table} WHERE path = ?", (path,))
    return int(rows[0].n)


async def test_create_makes_the_missing_ancestors_and_lists_each_in_its_parent(
    base: RegistryNode,
) -> None:
    node = base.child("device").child("abc")
    assert await node.status() is NodeStatus.UNDEFINED
    await node.create()
    for created in (node, node.parent, base):
        assert created is not None and await created.status() is NodeStatus.CREATED
    assert await base.children_names() == ["device"]
    assert await base.child("device").children_names() == ["abc"]
    assert base.name in await RegistryNode(base.database, "/").children_names()


async def test_check_creates_only_what_is_not_created(base: RegistryNode) -> None:
    assert await base.check() is True
    assert await base.check() is False
    await base.delete()
    assert await base.status() is NodeStatus.DELETED
    assert await base.check() is True
    assert await base.exists()


async def test_values_read_set_and_delete_without_creating_the_node(base: RegistryNode) -> None:
    await base.set_value("a", "1")
    await base.set_values({"b": "2", "c": "3"})
    assert not await base.exists()
    assert await base.values() == {"a": "1", "b": "2", "c": "3"}
    assert await base.value("b") == "2"
    assert await base.value("missing") is None
    assert await base.value("missing", "fallback") == "fallback"
    await base.delete_value("a")
    await base.delete_values(["b", "not-there"])
    assert await base.values() == {"c": "3"}
    state = await base.load()
    assert state.status is NodeStatus.UNDEFINED and not state.exists
    await base.create()
    assert (await base.load()).values == {"c": "3"}


async def test_hidden_children_are_listed_only_when_asked(base: RegistryNode) -> None:
    await asyncio.gather(*(base.child(name).create() for name in ("b", ".hidden", "a")))
    assert await base.children_names() == ["a", "b"]
    assert await base.children_names(include_hidden=True) == [".hidden", "a", "b"]
    assert [child.path for child in await base.children()] == [
        base.child("a").path,
        base.child("b").path,
    ]
    assert base.child(".hidden").is_hidden


async def test_children_of_a_wide_node_are_read_page_after_page(base: RegistryNode) -> None:
    await base.create()
    names = [f"child-{number:05d}" for number in range(1500)]
    await asyncio.gather(*(base.child(name).mark_created() for name in names))
    assert await base.children_names() == names


async def test_soft_delete_marks_the_subtree_deleted_keeps_values_and_unlists_it(
    base: RegistryNode,
) -> None:
    leaf = base.child("a").child("b")
    await leaf.create()
    await leaf.set_value("kept", "yes")
    await base.child("a").child(".hidden").create()
    await base.child("other").create()

    assert await base.child("a").delete() == 3
    for deleted in (base.child("a"), leaf, base.child("a").child(".hidden")):
        assert await deleted.status() is NodeStatus.DELETED
    assert await leaf.values() == {"kept": "yes"}
    assert await base.children_names() == ["other"]
    assert await base.child("a").children_names(include_hidden=True) == []
    assert await base.child("a").delete() == 0, "a deleted node has nothing left to delete"


async def test_hard_delete_removes_every_row_of_the_subtree(base: RegistryNode) -> None:
    leaf = base.child("a").child("b")
    await leaf.create()
    await leaf.set_value("x", "1")
    await leaf.write_block(0, b"data")
    await base.child("keep").create()
    database = base.database

    assert await base.child("a").delete(hard=True) == 2
    for path in (base.child("a").path, leaf.path):
        assert await _rows(database, "registrynode", path) == 0
        assert await _rows(database, "registrynodechildren", path) == 0
        assert await _rows(database, "registrynodedata", path) == 0
    assert await base.children_names() == ["keep"]
    assert await base.child("a").delete(hard=True) == 0


async def test_a_soft_deleted_node_can_be_hard_deleted(base: RegistryNode) -> None:
    await base.create()
    await base.delete()
    assert await base.delete(hard=True) == 1
    assert await base.status() is NodeStatus.UNDEFINED


async def test_cleanup_hard_deletes_every_soft_deleted_node(base: RegistryNode) -> None:
    database = base.database
    await cleanup(database)  # what earlier tests left
    file_node = base.child("a").child("file")
    await file_node.create()
    await file_node.write_block(0, b"x")
    await base.child("b").create()
    await base.child("a").delete()

    assert await cleanup(database) == 2
    for path in (base.child("a").path, file_node.path):
        assert await _rows(database, "registrynode", path) == 0
        assert await _rows(database, "registrynodedata", path) == 0
    assert await base.child("b").exists()
    assert await cleanup(database) == 0


async def test_copy_takes_values_children_and_blocks_and_leaves_the_source(
    base: RegistryNode,
) -> None:
    source = base.child("source")
    await source.child("settings").create()
    await source.child(".hidden").create()
    await source.set_values({"ident": "1234"})
    await source.child("settings").set_value("period", "60")
    await asyncio.gather(*(source.child("settings").write_block(i, bytes([i]) * 3) for i in (0, 1)))

    target = await source.copy_to(f"{base.path}elsewhere/target")

    assert target.path == f"{base.path}elsewhere/target/"
    assert await export_tree(target) == await export_tree(source)
    assert await target.child("settings").read_block(1) == b"\x01\x01\x01"
    assert await base.child("elsewhere").children_names() == ["target"]
    assert await source.exists()


async def test_copy_refuses_an_existing_destination_a_missing_source_and_itself(
    base: RegistryNode,
) -> None:
    await base.child("a").create()
    await base.child("b").create()
    with pytest.raises(NodeExistsError, match="already exists"):
        await base.child("a").copy_to(base.child("b").path)
    with pytest.raises(NodeNotFoundError, match="does not exist"):
        await base.child("missing").copy_to(base.child("c").path)
    with pytest.raises(InvalidPathError, match="inside"):
        await base.child("a").copy_to(f"{base.child('a').path}below")


async def test_copy_over_a_deleted_node_replaces_what_it_left(base: RegistryNode) -> None:
    target = base.child("target")
    await target.create()
    await target.set_values({"stale": "yes"})
    await target.delete()
    source = base.child("source")
    await source.create()
    await source.set_values({"fresh": "yes"})

    await source.copy_to(target.path)

    assert (await target.load()).values == {"fresh": "yes"}
    assert await target.exists()


async def test_move_is_a_copy_then_a_soft_delete(base: RegistryNode) -> None:
    source = base.child("from")
    await source.child("inner").create()
    await source.child("inner").set_value("v", "1")

    moved = await source.move_to(base.child("to").path)

    assert await moved.child("inner").values() == {"v": "1"}
    assert await source.status() is NodeStatus.DELETED
    assert await base.children_names() == ["to"]


async def test_walk_goes_depth_first_in_name_order(base: RegistryNode) -> None:
    for relative in ("b/x", "a/z/deep", "a/y", "a/.hidden"):
        await RegistryNode(base.database, f"{base.path}{relative}").create()
    walked = [(depth, node.name) async for depth, node in base.walk()]
    assert walked == [
        (0, base.name),
        (1, "a"),
        (2, "y"),
        (2, "z"),
        (3, "deep"),
        (1, "b"),
        (2, "x"),
    ]
    with_hidden = [node.name async for _, node in base.walk(include_hidden=True)]
    assert ".hidden" in with_hidden


async def test_export_nests_values_and_children(base: RegistryNode) -> None:
    await base.child("device").child(".meta").create()
    await base.set_values({"b": "2", "a": "1"})
    await base.child("device").set_value("ident", "x")

    assert await export_tree(base) == {
        "values": {"a": "1", "b": "2"},
        "children": {
            "device": {
                "values": {"ident": "x"},
                "children": {".meta": {"values": {}, "children": {}}},
            }
        },
    }
    with pytest.raises(NodeNotFoundError):
        await export_tree(base.child("missing"))


async def test_import_of_an_export_rebuilds_the_same_tree_elsewhere(base: RegistryNode) -> None:
    source = base.child("source")
    await source.child("a").child("b").create()
    await source.child("a").set_values({"x": "1", "y": "2"})
    await source.child(".h").create()
    document = await export_tree(source)

    count = await import_tree(base.child("copy").child("deeper"), document)

    assert count == 4
    assert await export_tree(base.child("copy").child("deeper")) == document
    assert await base.child("copy").exists()


async def test_import_merges_into_what_is_there(base: RegistryNode) -> None:
    await base.child("kept").create()
    await base.set_values({"old": "1", "changed": "old"})

    await import_tree(base, {"values": {"changed": "new"}, "children": {"added": {}}})

    assert await base.values() == {"old": "1", "changed": "new"}
    assert await base.children_names() == ["added", "kept"]


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ([], "must be a JSON object"),
        ({"value": {}}, "unknown key"),
        ({"values": {"n": 1}}, "'values' must be an object of strings"),
        ({"values": ["a"]}, "'values' must be an object of strings"),
        ({"children": []}, "'children' must be an object of nodes"),
        ({"children": {"ok": {"children": {"bad": "text"}}}}, "/ok/bad/: a node must be"),
    ],
)
async def test_import_checks_the_whole_document_before_writing(
    base: RegistryNode, document: object, problem: str
) -> None:
    tree = {"children": {"first": {"values": {"a": "1"}}, "second": document}}
    with pytest.raises(InvalidTreeError, match=problem):
        await import_tree(base, tree)
    assert await base.status() is NodeStatus.UNDEFINED
    assert await base.child("first").status() is NodeStatus.UNDEFINED


async def test_import_refuses_a_child_name_that_is_not_one_segment(base: RegistryNode) -> None:
    with pytest.raises(InvalidPathError, match="cannot contain '/'"):
        await import_tree(base, {"children": {"a/b": {}}})
    assert await base.status() is NodeStatus.UNDEFINED


def test_bad_paths_are_refused_before_any_request(database: Database) -> None:
    with pytest.raises(InvalidPathError, match="must be absolute"):
        RegistryNode(database, "device/abc")
    with pytest.raises(InvalidPathError, match=re.escape("'..' segment")):
        RegistryNode(database, "/device/../x")
    with pytest.raises(InvalidPathError, match="cannot contain '/'"):
        RegistryNode(database, "/device/").child("a/b")

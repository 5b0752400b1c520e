"""Records up from an edge site: stored there while the uplink is cut, and every one of
them in the cloud, once, when it returns.

Two platforms on this machine. The cloud: the stack's nsqd and a storage worker on topics
of its own, writing to the test keyspace. The edge: an nsqd and nsqlookupd of its own (a
second stack on 127.0.3.1, without Cassandra), its own keyspace in the same Cassandra, and
``m2m serve`` with every service and ``sync``, whose uplink to the cloud's nsqd goes
through a TCP relay the test cuts and restores.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from m2m.blobstore.errors import BlobError
from m2m.blobstore.metadata import DEFAULT_BLOCK_SIZE
from m2m.cassandra import Database, connect_session, qualified
from m2m.config import load_config
from m2m.receivers.alip.client import ALIPClient
from m2m.receivers.m2mp.client import M2MPClient
from m2m.registry.device import Device, device_id_for
from m2m.registry.firmware import Firmwares
from m2m.stack.nsq import LOOKUPD_HTTP_PORT, NSQD_TCP_PORT
from m2m.timeseries import Record, TimeSeries
from tests.conftest import (
    Platform,
    eventually,
    free_port,
    fresh_platform,
    run_m2m,
    start_platform,
)

EDGE_ADDRESS = "127.0.3.1"
RECORDS = 40
SITE = "depot"
SHIP = "ship"
SHIP_ADDRESS = "127.0.4.1"
T = TypeVar("T")


class Uplink:
    """A TCP relay to the cloud's nsqd that can be cut (connections closed, new ones
    refused) and restored on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()

    def restore(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port))
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
            if self._listener is not None:
                sockets.append(self._listener)
                self._listener = None
        for sock in sockets:
            with_shutdown(sock)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                device_side, _ = listener.accept()
            except OSError:
                return  # cut
            cloud_side = socket.create_connection(self.target)
            with self._lock:
                self._sockets += [device_side, cloud_side]
            for source, sink in ((device_side, cloud_side), (cloud_side, device_side)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()


def with_shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed by its peer
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):  # cut
        while data := source.recv(65536):
            sink.sendall(data)
    with_shutdown(sink)


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """The cloud: its own keyspace and topics, storage and the cloud's side of sync."""
    directory = tmp_path_factory.mktemp("cloud")
    with fresh_platform(directory, label="cloud") as path:
        settings = yaml.safe_load(path.read_text())
        settings["sync"] = {"sites": [SITE, SHIP]}
        path.write_text(yaml.safe_dump(settings))
        running = start_platform(path, directory, only="converter,storage,sync")
        yield running
        running.stop()


@contextlib.contextmanager
def site_stack(directory: Path, address: str) -> Iterator[None]:
    """nsqlookupd and nsqd of a site's own, on ``address`` (no Cassandra: one process
    holds every platform's keyspace)."""
    directory.mkdir()
    config = directory / "stack.yaml"
    config.write_text(yaml.safe_dump({"stack": {"state_dir": str(directory), "address": address}}))
    try:
        run_m2m("stack", "start", "nsqlookupd", config=config)
        run_m2m("stack", "start", "nsqd", config=config)
        yield
    finally:
        run_m2m("stack", "down", config=config)


@contextlib.contextmanager
def site_config(
    directory: Path, site: str, address: str, cloud: Platform, upstream: str
) -> Iterator[Path]:
    """A site's platform: its keyspace, its nsqd on ``address``, its uplink to ``upstream``."""
    with site_stack(directory / "stack", address), fresh_platform(directory, label=site) as path:
        settings = yaml.safe_load(path.read_text())
        settings["nsq"] |= {
            "nsqd_tcp_addresses": [f"{address}:{NSQD_TCP_PORT}"],
            "lookupd_http_addresses": [f"{address}:{LOOKUPD_HTTP_PORT}"],
        }
        settings["sync"] = {
            "site": site,
            "upstream": {
                "nsqd_tcp_addresses": [upstream],
                "topic_prefix": cloud.config.nsq.topic_prefix,
            },
            "status_interval": 0.5,
        }
        path.write_text(yaml.safe_dump(settings))
        yield path


@pytest.fixture(scope="module")
def uplink(cloud: Platform) -> Iterator[Uplink]:
    relay = Uplink(("127.0.0.1", NSQD_TCP_PORT))
    relay.restore()
    yield relay
    relay.cut()


@pytest.fixture(scope="module")
def edge_config(
    cloud: Platform, uplink: Uplink, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """The depot: its uplink through the relay the tests cut."""
    directory = tmp_path_factory.mktemp("edge")
    with site_config(directory, SITE, EDGE_ADDRESS, cloud, f"127.0.0.1:{uplink.port}") as path:
        yield path


@pytest.fixture(scope="module")
def ship_config(cloud: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A second site, its uplink straight to the cloud's nsqd."""
    directory = tmp_path_factory.mktemp("ship")
    with site_config(directory, SHIP, SHIP_ADDRESS, cloud, f"127.0.0.1:{NSQD_TCP_PORT}") as path:
        yield path


def new_ident() -> str:
    return f"edge:{uuid.uuid4().hex[:12]}"


def start_edge(edge_config: Path) -> Platform:
    directory = edge_config.parent / f"serve-{uuid.uuid4().hex[:6]}"
    directory.mkdir()
    return start_platform(edge_config, directory)


async def records(config: Path, ident: str) -> list[Record]:
    async def read(database: Database) -> list[Record]:
        found = TimeSeries(database).records(f"dev-{device_id_for(ident)}", "sen:loc")
        return [record async for record in found]

    return await keyspace(config, read)


def sync_status(config: Path) -> tuple[int, dict[str, Any]]:
    result = run_m2m("sync", "status", "--json", config=config, check=False)
    return result.returncode, json.loads(result.stdout)


def uplink_check(platform: Platform) -> tuple[str, str]:
    """``m2m status``'s uplink line: its status, and its detail up to the oldest's age."""
    result = run_m2m("status", "--json", config=platform.config_file, check=False)
    checks = [json.loads(line) for line in result.stdout.decode().splitlines()]
    (uplink,) = [check for check in checks if check["check"] == "uplink"]
    return uplink["status"], uplink["detail"].split("the oldest for")[0]


async def send_locations(platform: Platform, ident: str, count: int) -> None:
    async with await M2MPClient.connect("127.0.0.1", platform.m2mp_port) as device:
        assert await device.identify(ident)
        for i in range(count):
            device.send_data("sen:loc", struct.pack(">ff", 48.0 + i / 100, 2.0))
        await device.ping(1)  # answered once the edge's nsqd has them all


async def test_records_stored_offline_reach_the_cloud_once_when_the_uplink_returns(
    cloud: Platform, uplink: Uplink, edge_config: Path
) -> None:
    edge = start_edge(edge_config)
    ident = new_ident()
    try:
        uplink.cut()
        await send_locations(edge, ident, RECORDS)
        stored = await eventually(
            lambda: records(edge_config, ident), lambda r: len(r) == RECORDS, "edge records"
        )

        async def status() -> tuple[int, dict[str, Any]]:
            return sync_status(edge_config)

        # The device's records, and the platform's own about it (``_server``: connected…).
        code, shown = await eventually(
            status, lambda s: s[1]["backlog"] >= RECORDS, "the backlog, counted"
        )
        assert code == 3 and shown["state"] == "disconnected"
        assert shown["oldest_unsent_s"] is not None and shown["oldest_unsent_s"] >= 0
        assert uplink_check(edge) == (
            "FAIL",
            f"disconnected to 127.0.0.1:{uplink.port}; {shown['backlog']} waiting, ",
        )
        assert await records(cloud.config_file, ident) == []

        edge.stop()  # the backlog outlives the edge's processes
        edge = start_edge(edge_config)
        uplink.restore()
        in_cloud = await eventually(
            lambda: records(cloud.config_file, ident),
            lambda r: len(r) >= RECORDS,
            "every record in the cloud",
        )
        assert sorted(r.uuid for r in in_cloud) == sorted(r.uuid for r in stored)
        assert [r.data for r in in_cloud] == [r.data for r in stored]
        code, shown = await eventually(
            status, lambda s: s[1]["state"] == "connected" and s[1]["backlog"] == 0, "caught up"
        )
        assert code == 0 and shown["oldest_unsent_s"] is None
        assert uplink_check(edge) == ("OK", f"connected to 127.0.0.1:{uplink.port}; 0 waiting")
    finally:
        edge.stop()


async def keyspace(config: Path, work: Callable[[Database], Awaitable[T]]) -> T:
    """``work`` on the keyspace of the platform of ``config``."""
    cassandra = load_config(config).cassandra
    cluster, session = connect_session(cassandra)
    try:
        return await work(Database(cluster, session, cassandra.keyspace, 64))
    finally:
        cluster.shutdown()


async def registry(config: Path, work: Callable[[Device], Awaitable[T]], ident: str) -> T:
    """``work`` on the device's registry entry at the platform of ``config``."""
    return await keyspace(config, lambda database: work(Device(database, device_id_for(ident))))


async def settings_of(config: Path, ident: str) -> tuple[dict[str, str], dict[str, str], set[str]]:
    """The device's settings, those to send, and the names acknowledged."""

    async def read(device: Device) -> tuple[dict[str, str], dict[str, str], set[str]]:
        acked = await device.settings_ack_times()
        return await device.settings(), await device.settings_to_send(), set(acked)

    return await registry(config, read, ident)


async def site_of(config: Path, ident: str) -> str | None:
    return await registry(config, lambda device: device.node.value("site"), ident)


def set_setting(config: Path, ident: str, name: str, value: str) -> None:
    run_m2m("device", "setting", "set", ident, name, value, config=config)


async def settings_pushed(client: ALIPClient, wanted: set[str]) -> None:
    """Read ``S S`` lines until each wanted one came (a push sends every pending one)."""
    seen: set[str] = set()
    while not wanted <= seen:
        seen.add(await client.receive_line(30))


async def identified_at(edge: Platform, ident: str) -> ALIPClient:
    client = await ALIPClient.connect("127.0.0.1", edge.alip_port)
    assert await client.identify(ident)
    assert await client.receive_line() == "S GA"
    return client


async def test_settings_cross_while_offline_and_the_later_change_wins_on_both_sides(
    cloud: Platform, uplink: Uplink, edge_config: Path
) -> None:
    edge = start_edge(edge_config)
    ident = new_ident()
    try:
        async with await identified_at(edge, ident) as client:
            await eventually(lambda: site_of(cloud.config_file, ident), lambda s: s == SITE,
                             "the cloud knows the device is the site's")  # fmt: skip
            uplink.cut()
            # At the site, while offline: a setting defined, pushed and acknowledged.
            set_setting(edge_config, ident, "mode", "edge")
            await settings_pushed(client, {"S S mode edge"})
            client.send_line("S A mode edge")
            await eventually(lambda: settings_of(edge_config, ident), lambda s: not s[1],
                             "acknowledged at the site")  # fmt: skip
            # In the cloud, later: the same setting (it wins) and another one.
            set_setting(cloud.config_file, ident, "mode", "cloud")
            set_setting(cloud.config_file, ident, "period", "30")
            uplink.restore()
            # The cloud's changes reach the device, which acknowledges them at the site.
            await settings_pushed(client, {"S S mode cloud", "S S period 30"})
            client.send_line("S A mode cloud")
            client.send_line("S A period 30")
            expected = ({"mode": "cloud", "period": "30"}, {}, {"mode", "period"})
            for platform in (edge_config, cloud.config_file):
                await eventually(lambda p=platform: settings_of(p, ident),
                                 lambda s: s == expected, f"settings at {platform}")  # fmt: skip
    finally:
        edge.stop()


async def test_sync_check_finds_changes_made_behind_its_back_and_repairs_them(
    cloud: Platform, edge_config: Path
) -> None:
    edge = start_edge(edge_config)
    ident = new_ident()
    device_id = device_id_for(ident)
    try:
        async with await identified_at(edge, ident):
            set_setting(edge_config, ident, "period", "60")
            await checked_in_sync(edge_config, "in sync first")
            settings = f"/device/{device_id}/settings/"
            answers = f"/device/{device_id}/commands-response/"
            raw_cql(
                cloud.config_file,
                f"UPDATE registrynode SET values['period'] = '99' WHERE path = '{settings}'",
            )
            raw_cql(edge_config, f"DELETE FROM registrynode WHERE path = '{answers}'")
            code, found = sync_check(edge_config)
            assert code == 3 and found["differing_devices"] == [device_id]
            assert found["differing_nodes"] == sorted([settings, answers])
            code, repaired = sync_check(edge_config, "--repair")
            assert code == 0 and repaired["repaired"]
            await checked_in_sync(edge_config, "in sync again")
            for platform in (edge_config, cloud.config_file):
                values, _, _ = await settings_of(platform, ident)
                assert values["period"] == "99"  # the later change, made in the cloud
                assert not await registry(
                    platform, lambda d: d.node.child("commands-response").exists(), ident
                )
    finally:
        edge.stop()


async def test_a_device_moving_to_another_site_is_served_there_with_its_settings(
    cloud: Platform, edge_config: Path, ship_config: Path
) -> None:
    depot, ship = start_edge(edge_config), start_edge(ship_config)
    ident = new_ident()
    try:
        async with await identified_at(depot, ident) as client:
            await eventually(lambda: site_of(cloud.config_file, ident), lambda s: s == SITE,
                             "the device is the depot's")  # fmt: skip
            set_setting(cloud.config_file, ident, "period", "30")
            await settings_pushed(client, {"S S period 30"})
            client.send_line("S A period 30")
            set_setting(cloud.config_file, ident, "mode", "night")  # pending when it leaves
            await settings_pushed(client, {"S S mode night"})
        async with await identified_at(ship, ident) as client:  # new to the ship: S GA
            await settings_pushed(client, {"S S mode night"})  # what the cloud knows of it
            client.send_line("S A mode night")
            await eventually(lambda: site_of(cloud.config_file, ident), lambda s: s == SHIP,
                             "the device is the ship's")  # fmt: skip
            expected = ({"mode": "night", "period": "30"}, {}, {"mode", "period"})
            for platform in (ship_config, cloud.config_file):
                await eventually(lambda p=platform: settings_of(p, ident),
                                 lambda s: s == expected, f"settings at {platform}")  # fmt: skip
        # The depot knows where it went, and checks no longer count it as its own.
        await eventually(lambda: site_of(edge_config, ident), lambda s: s == SHIP, "told")
        await checked_in_sync(edge_config, "the depot in sync")
    finally:
        depot.stop()
        ship.stop()


async def firmware_content(config: Path, name: str) -> bytes | None:
    """The named firmware as a device at that platform would get it (None: not there)."""

    async def read(database: Database) -> bytes | None:
        try:
            blob = await Firmwares(database).open(name)
        except BlobError:
            return None  # not complete there yet
        if blob is None:
            return None
        async with blob:
            return await blob.read()

    return await keyspace(config, read)


async def test_firmware_added_in_the_cloud_reaches_every_site_whole_and_goes_when_removed(
    cloud: Platform, edge_config: Path, ship_config: Path, tmp_path: Path
) -> None:
    depot, ship = start_edge(edge_config), start_edge(ship_config)
    content = os.urandom(3 * DEFAULT_BLOCK_SIZE - 1000)  # three blocks, the last not full
    (tmp_path / "tracker.bin").write_bytes(content)
    name = f"tracker-{uuid.uuid4().hex[:6]}"
    try:
        run_m2m("firmware", "add", name, str(tmp_path / "tracker.bin"), config=cloud.config_file)
        for site in (edge_config, ship_config):
            await eventually(lambda s=site: firmware_content(s, name), lambda c: c == content,
                             f"the firmware at {site}")  # fmt: skip
        run_m2m("firmware", "rm", name, config=cloud.config_file)
        for site in (edge_config, ship_config):
            await eventually(lambda s=site: firmware_content(s, name), lambda c: c is None,
                             f"the firmware gone at {site}")  # fmt: skip
    finally:
        depot.stop()
        ship.stop()


def sync_check(config: Path, *options: str) -> tuple[int, dict[str, Any]]:
    result = run_m2m("sync", "check", "--json", *options, config=config, check=False)
    assert result.returncode in (0, 3), result.stderr.decode()
    return result.returncode, json.loads(result.stdout)


async def checked_in_sync(config: Path, what: str) -> None:
    """Run ``m2m sync check`` until it finds the site in sync (changes may be in flight)."""

    async def checked() -> tuple[int, dict[str, Any]]:
        return sync_check(config)

    await eventually(checked, lambda c: c[0] == 0 and c[1]["in_sync"], what)


def raw_cql(config: Path, cql: str) -> None:
    """A change behind the sync's back: CQL on the platform's keyspace, no journal."""
    cassandra = load_config(config).cassandra
    cluster, session = connect_session(cassandra)
    try:
        session.execute(qualified(cql, cassandra.keyspace))
    finally:
        cluster.shutdown()


async def test_status_says_when_the_sync_service_is_not_running(edge_config: Path) -> None:
    async def status() -> tuple[int, dict[str, Any]]:
        return sync_status(edge_config)

    code, shown = await eventually(
        status, lambda s: s[1]["state"] != "connected", "stale once the edge stopped"
    )
    assert code == 3 and shown["state"].startswith("sync service not running (last seen")


@pytest.mark.parametrize("command", ["status", "check"])
def test_sync_commands_on_a_platform_that_is_no_edge(config_file: Path, command: str) -> None:
    result = run_m2m("sync", command, config=config_file, check=False)
    assert result.returncode == 1
    assert result.stderr.decode() == "Error: this platform is no edge: sync.upstream is not set\n"


def test_a_check_says_when_the_cloud_cannot_be_reached(edge_config: Path, tmp_path: Path) -> None:
    settings = yaml.safe_load(edge_config.read_text())
    closed = f"127.0.0.1:{free_port()}"
    settings["sync"]["upstream"]["nsqd_tcp_addresses"] = [closed]
    config = tmp_path / "unreachable.yaml"
    config.write_text(yaml.safe_dump(settings))
    result = run_m2m("sync", "check", config=config, check=False)
    assert result.returncode == 1
    assert result.stderr.decode() == f"Error: cannot reach the cloud's nsqd at {closed}\n"

"""The platform's configuration: one YAML file, every key with a default for the local stack.

Where the file is found, first match wins: ``--config FILE``, ``$M2M_CONFIG``, ``./m2m.yaml``;
with none of them the defaults apply. An unknown key or a value of the wrong type is a
:class:`ConfigError` naming the key and the file.

Secrets (the fields typed :class:`~pydantic.SecretStr`, such as ``cassandra.password``) need
not sit in the file: any string may be written ``"${ENV_VAR}"`` (or ``"${ENV_VAR:-default}"``)
or ``{file: PATH}`` (that file's content; a relative PATH is relative to the config file), so
the file itself can be shared while the secret stays with the operator. A secret is never
shown: ``SecretStr`` masks it in ``repr`` and dumps, and no error message quotes a value. A
file that does hold one (literally, or as a ``${VAR:-default}``) is refused when every user
may read it, as is a ``{file:}`` secret file: a readable password is a leaked one.
"""

from __future__ import annotations

import os
import re
import stat
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from m2m.errors import M2MError

ENV_VAR = "M2M_CONFIG"
LOCAL_FILE = "m2m.yaml"


class ConfigError(M2MError):
    """The configuration file cannot be read or does not describe a valid configuration."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsFiles(_Section):
    """PEM files for a TLS connection the platform opens (to Cassandra, to nsqd)."""

    ca: Path
    """The CA that signed the server's certificate: the server is verified against it,
    its certificate naming the address connected to."""
    cert: Path | None = None
    """This client's certificate, for servers that require one (with ``key``)."""
    key: Path | None = None

    @model_validator(mode="after")
    def _cert_with_key(self) -> TlsFiles:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together: give both or neither")
        return self


class CassandraConfig(_Section):
    contact_points: list[str] = ["127.0.0.1"]
    port: int = Field(9042, ge=1, le=65535)
    keyspace: str = Field("m2m", pattern=r"^[A-Za-z][A-Za-z0-9_]{0,47}$")
    replication: dict[str, str | int] = {"class": "SimpleStrategy", "replication_factor": 1}
    consistency: str = "LOCAL_QUORUM"
    local_dc: str | None = None
    """The datacenter whose nodes serve requests (default: that of the contact points)."""
    username: str | None = None
    password: SecretStr | None = None
    tls: TlsFiles | None = None
    """Client-to-node encryption: unset, the driver speaks plain CQL."""
    max_in_flight: int = Field(256, ge=1)
    """Requests one process keeps outstanding at most; more wait for a free slot."""
    registry_journal: bool = False
    """Record every registry change in ``registry_journal`` for a sync service to send on;
    turned on by ``sync.upstream`` and ``sync.sites``."""


class NsqConfig(_Section):
    nsqd_tcp_addresses: list[str] = ["127.0.0.1:4150"]
    tls: TlsFiles | None = None
    """TLS to nsqd's TCP port, where messages are published and consumed (nsqd's
    ``--tls-required``). The lookup daemons and nsqd's HTTP port stay plain HTTP: NSQ
    has no TLS for the former, and only the latter's port is advertised by them."""
    lookupd_http_addresses: list[str] = ["127.0.0.1:4161"]
    lookupd_poll_interval: int = Field(15, ge=1)
    """Seconds between asking the lookup daemons which nsqd hold a consumer's topic."""
    topic_prefix: str = Field("", pattern=r"^[A-Za-z0-9._-]{0,40}$")
    """Put before every NSQ topic name, so platforms (staging, tests) can share one NSQ
    cluster without consuming each other's messages. Empty: the original topic names."""
    max_in_flight: int = Field(1000, ge=1, le=2500)
    """Messages nsqd may have out to one consumer at once (across its nsqd connections).
    Each stays out for nsqd's output buffering, the write and the FIN, about 0.1 s under
    load, so this caps a worker's rate: 200 held one near 2,000 messages/s. At most
    nsqd's ``--max-rdy-count`` (2,500 by default)."""
    max_depth: int = Field(10_000, ge=0)
    """Messages a topic or channel may hold waiting before ``m2m bus stats`` flags it (and
    exits non-zero): deeper, its consumer is down or too slow, or nobody reads it."""
    max_message_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    """The largest message published: at most nsqd's ``--max-msg-size`` (the stack and
    deploy/ run nsqd with 4 MiB: a 1 MiB M2MP frame is 2 MiB of hex on the bus)."""
    max_attempts: int = Field(5, ge=1)
    """Deliveries of a message whose handling fails unexpectedly (a bug, not refused input
    nor an outage) before it is parked on ``<topic>.dead``."""


class ListenConfig(_Section):
    listen: str | tuple[str, ...]
    """A Twisted server endpoint string, e.g. ``tcp:3010`` or ``ssl:3011:privateKey=…``, or
    a list of them, a port each: ``[tcp:3010, "ssl:3011:privateKey=…"]`` serves the
    protocol plain to old devices and inside TLS to new ones, in one process."""
    client_ca: Path | None = None
    """With ``ssl:`` listen strings: devices must present a certificate this CA (PEM)
    signed on those ports, or the TLS handshake fails; the plain ports stay plain."""

    @property
    def endpoints(self) -> tuple[str, ...]:
        """Every endpoint string of ``listen``, in its order (one string: just that one)."""
        return (self.listen,) if isinstance(self.listen, str) else self.listen

    @field_validator("listen", mode="before")
    @classmethod
    def _endpoint_strings(cls, listen: object) -> object:
        """One error naming the key, rather than one per form ``listen`` may take."""
        if isinstance(listen, str):
            return listen
        if isinstance(listen, list | tuple) and listen and all(isinstance(s, str) for s in listen):
            return listen
        raise ValueError("an endpoint string (tcp:3010) or a non-empty list of them")


class TimingConfig(_Section):
    """Durations of the device sessions, in seconds (the protocols' own; shorter in tests)."""

    ping_after_silence: float = Field(900, gt=0)
    """Nothing received for this long (and nothing sent for ``ping_quiet_period``): ping."""
    ping_quiet_period: float = Field(30, gt=0)
    setting_resend_interval: float = Field(40, ge=0)
    """The same ``name=value`` is not pushed to one connection again within this time."""
    identification_timeout: float = Field(30, gt=0)
    """ALIP: a device that has not identified by then is told so and disconnected."""
    disconnect_after_silence: float = Field(43200, gt=0)
    """ALIP: nothing received for this long (12 h): disconnect."""
    sweep_interval: float = Field(5, gt=0)
    """How often the receiver looks for connections to ping or drop."""
    unidentified_frames_allowed: int = Field(5, ge=0)
    """M2MP: data frames ignored before identification; one more closes the connection."""
    heartbeat_interval: float = Field(15, gt=0)
    """How often a receiver process says on ``events`` that it is alive (``receiver_alive``):
    the devices of one that stopped saying so for three intervals are shown disconnected."""


class LimitsConfig(_Section):
    """Bounds on what devices, well-behaved or not, can make a receiver process hold."""

    connections: int = Field(50_000, ge=1)
    """Open device connections per receiver process (both protocols); more are refused."""
    connections_per_address: int = Field(1_000, ge=1)
    """Open connections from one peer IP address; more are refused."""
    buffered_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    """What one connection sent that waits to be handled; beyond it, reading pauses."""
    routes_cached: int = Field(256, ge=0)
    """M2MP: channels whose topic (channel translation) one connection remembers."""
    command_numbers: int = Field(1_000, ge=1)
    """ALIP: command numbers one connection remembers for ``C A <n>``."""


class ReceiversConfig(_Section):
    m2mp: ListenConfig = ListenConfig(listen="tcp:3010")
    alip: ListenConfig = ListenConfig(listen="tcp:3050")
    enrollment: Literal["open", "registered", "certificate"] = "open"
    """``open`` creates unknown devices on identification; ``registered`` refuses them;
    ``certificate`` accepts (and creates) a device only if the ident it sends is the one its
    TLS client certificate names (see ``client_ca``): any other is refused."""
    ack: Literal["nsqd", "immediate"] = "nsqd"
    """When a device's acknowledgement request (ALIP ``A``, M2MP ping) is answered:
    ``nsqd`` once nsqd acknowledged everything the connection sent before it (the answer
    promises it is safe), ``immediate`` at once (it only says the link is alive)."""
    timing: TimingConfig = TimingConfig()
    limits: LimitsConfig = LimitsConfig()


class WebConfig(_Section):
    """The ``web`` service: HTTP API, console and live events."""

    listen: str = "tcp:8080"
    """``tcp:PORT[:interface=ADDRESS]`` (a Twisted-style endpoint string; port 0 picks one)."""
    session_hours: float = Field(12, gt=0)
    """How long a console login lasts."""
    max_upload_bytes: int = Field(256 * 1024 * 1024, ge=1)
    """The largest firmware file accepted over HTTP (413 beyond it)."""
    live_lag_limit: float = Field(5, gt=0)
    """Seconds: a bus message older than this when the web service reads it is skipped
    (counted, and the pages told to catch up from the API) instead of streamed late."""


class MetricsConfig(_Section):
    """Each ``m2m serve`` process's operations port: Prometheus metrics and health."""

    listen: str | None = None
    """``tcp:PORT[:interface=ADDRESS]`` serving ``/metrics``, ``/healthz`` and ``/readyz``;
    unset: none (``m2m serve --metrics-listen`` sets it for one process)."""


class LoggingConfig(_Section):
    format: Literal["text", "json"] = "text"
    """``text``: one line a person reads; ``json``: one JSON object a line, for machines."""
    level: Literal["debug", "info", "warning", "error"] = "info"


SITE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,47}$"
"""A site's name: it is part of NSQ topics' names (``sync-down-<site>``)."""
MAX_TOPIC_LENGTH = 64
"""nsqd's longest topic name."""

Direction = Literal["both", "up", "down", "none"]


class SyncRules(_Section):
    """Which way each kind of a device's registry data goes between a site and the cloud."""

    device: Direction = "both"
    """The device's own node (ident, owner, site) and its ``by-ident`` entry."""
    settings: Direction = "both"
    """``settings``, ``settings-to-send``, ``settings-ack-time``."""
    commands: Direction = "both"
    """``commands``, ``commands-response``."""
    status: Direction = "up"
    routes: Direction = "down"
    """``channel-translation``, the device's and ``/device/default/``'s."""
    sensors: Direction = "up"
    """``listed-sensors``."""
    server_settings: Direction = "down"
    """``server-settings``, ``server-settings-public``."""
    firmware: Direction = "down"
    """``/firmware/``: the files devices fetch, and their names."""


class SyncConfig(_Section):
    """The ``sync`` service: an edge site's link to its cloud platform (``upstream``), and
    the cloud's side of it (``sites``)."""

    site: str = Field("site", pattern=SITE_NAME)
    """This site's name, as the cloud knows it."""
    sites: list[Annotated[str, Field(pattern=SITE_NAME)]] = []
    """At the cloud: the edge sites it serves. Each has a durable queue on the cloud's
    nsqd (``sync-down-<site>``) for the registry changes of its devices."""
    rules: SyncRules = SyncRules()
    check_interval: float = Field(3600, gt=0)
    """Seconds between two anti-entropy checks of the site's registry (also run after
    every reconnection)."""
    upstream: NsqConfig | None = None
    """The cloud platform's bus: its nsqd (``nsqd_tcp_addresses``), ``topic_prefix`` and
    ``tls``. Every record stored here is forwarded to its ``storage`` topic."""
    catch_up_rate: float = Field(2000, gt=0)
    """Records a second forwarded at most: a site back after a long outage catches up
    oldest first without starving the cloud's live traffic."""
    status_interval: float = Field(5, gt=0)
    """Seconds between two updates of what ``m2m sync status`` shows."""


class StackConfig(_Section):
    """The local development stack started by ``m2m stack up``."""

    state_dir: Path = Path("~/.local/state/m2m/stack")
    """Data, logs and PID files of the running stack."""
    cache_dir: Path = Path("~/.cache/m2m")
    """Downloaded and built artifacts, kept between runs."""
    cassandra_version: str = "5.0.9"
    nsq_version: str = "1.3.0"
    cassandra_heap: str = "1G"
    address: IPv4Address = Field(IPv4Address("127.0.0.1"))
    """The loopback address the services listen on, Cassandra node N on the (N-1)th one
    after it: another (``127.0.2.1``) runs a second stack beside the first."""

    @field_validator("address")
    @classmethod
    def _loopback(cls, address: IPv4Address) -> IPv4Address:
        if not address.is_loopback:
            raise ValueError("the local stack listens on a loopback address (127.x.y.z)")
        return address


class Config(_Section):
    cassandra: CassandraConfig = CassandraConfig()
    nsq: NsqConfig = NsqConfig()
    receivers: ReceiversConfig = ReceiversConfig()
    web: WebConfig = WebConfig()
    metrics: MetricsConfig = MetricsConfig()
    logging: LoggingConfig = LoggingConfig()
    sync: SyncConfig = SyncConfig()
    stack: StackConfig = StackConfig()

    @model_validator(mode="after")
    def _journal_for_sync(self) -> Config:
        """A platform with a sync service (a site, or a cloud with sites) journals the
        registry's changes, whichever of its processes makes them; its sites' topics on
        the cloud's nsqd must be names nsqd takes."""
        prefixes = [(self.sync.upstream.topic_prefix, self.sync.site)] if self.sync.upstream else []
        prefixes += [(self.nsq.topic_prefix, site) for site in self.sync.sites]
        for prefix, site in prefixes:
            longest = f"{prefix}sync-check-{site}"
            if len(longest) > MAX_TOPIC_LENGTH:
                raise ValueError(
                    f"site {site!r}: its topic {longest!r} is longer than nsqd's"
                    f" {MAX_TOPIC_LENGTH} characters (a shorter site name or topic prefix)"
                )
        if (self.sync.upstream or self.sync.sites) and not self.cassandra.registry_journal:
            cassandra = self.cassandra.model_copy(update={"registry_journal": True})
            object.__setattr__(self, "cassandra", cassandra)
        return self


Key = tuple[str, ...]
"""Where a value sits in the configuration, e.g. ``("cassandra", "password")``."""


def _secret_keys(model: type[BaseModel], within: Key = ()) -> Iterator[Key]:
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _secret_keys(annotation, (*within, name))
        elif annotation is SecretStr or SecretStr in typing.get_args(annotation):
            yield (*within, name)


SECRET_KEYS: tuple[Key, ...] = tuple(_secret_keys(Config))
"""The keys whose values are secrets: the fields typed ``SecretStr``."""


def find_config_file(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The file to read, by the documented order of precedence, or None for the defaults."""
    if explicit is not None:
        return Path(explicit)
    from_env = os.environ.get(ENV_VAR)
    if from_env:
        return Path(from_env)
    local = Path(LOCAL_FILE)
    return local if local.is_file() else None


def load_config(explicit: str | os.PathLike[str] | None = None) -> Config:
    """Load the configuration, validating every key; see the module docstring."""
    path = find_config_file(explicit)
    if path is None:
        return Config()
    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the configuration must be a mapping of sections")
    references = _References(path)
    config = parse_config(references.resolve(data, ()), source=str(path))
    references.refuse_readable_secrets(config)
    return config


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """What is wrong and where, without the snippet of the file PyYAML quotes: the line
    could hold a password."""
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        return "cannot parse it"
    mark, problem = exc.problem_mark, exc.problem or exc.context or "cannot parse it"
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"


_ENV_REFERENCE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>.*))?\}", re.S)


@dataclass
class _References:
    """Resolves the ``${ENV_VAR}`` and ``{file: PATH}`` values of one config file, and
    remembers where each secret came from: the config file or another file."""

    path: Path
    sources: dict[Key, Path | None] = field(default_factory=dict)
    """Each value's file: the config file, a ``{file:}``, or None for the environment."""

    def resolve(self, value: Any, key: Key) -> Any:
        if isinstance(value, dict):
            if value.keys() == {"file"} and isinstance(value["file"], str):
                return self._read_file(value["file"], key)
            return {name: self.resolve(item, (*key, str(name))) for name, item in value.items()}
        if isinstance(value, list):
            return [self.resolve(item, (*key, str(index))) for index, item in enumerate(value)]
        if isinstance(value, str) and (reference := _ENV_REFERENCE.fullmatch(value)):
            return self._read_environment(reference["name"], reference["default"], key)
        self.sources[key] = self.path
        return value

    def _read_environment(self, name: str, default: str | None, key: Key) -> str:
        value = os.environ.get(name)
        if value is not None and (value or default is None):
            self.sources[key] = None
            return value
        if default is None:
            raise self._error(key, f"environment variable {name} is not set")
        self.sources[key] = self.path  # the default is written in the file
        return default

    def _read_file(self, name: str, key: Key) -> str:
        path = self.path.parent / Path(name).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise self._error(key, f"cannot read {path}: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise self._error(key, f"{path} is not UTF-8 text") from exc
        self.sources[key] = path
        return text.removesuffix("\n")

    def _error(self, key: Key, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: {'.'.join(key)}: {problem}")

    def refuse_readable_secrets(self, config: Config) -> None:
        """Refuse every file holding one of ``config``'s secrets that all users may read."""
        for key in SECRET_KEYS:
            holder = self.sources.get(key)
            if holder is not None and _value_at(config, key) is not None:
                _refuse_if_world_readable(holder)


def _value_at(config: Config, key: Key) -> Any:
    value: Any = config
    for name in key:
        value = getattr(value, name)
    return value


def _refuse_if_world_readable(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from exc
    if mode & stat.S_IROTH:
        raise ConfigError(
            f"{path}: holds a password and is readable by every user: chmod o-r {path}"
        )


def dump_with_secrets(config: Config, **options: Any) -> dict[str, Any]:
    """``config.model_dump(mode="json", **options)`` with the secrets' own values instead
    of ``**********``: for a config file handed to another ``m2m`` process (which must be
    written readable by its owner only)."""
    data = config.model_dump(mode="json", **options)
    for key in SECRET_KEYS:
        section = data
        for name in key[:-1]:
            section = section.get(name, {})
        secret = _value_at(config, key)
        if key[-1] in section and secret is not None:
            section[key[-1]] = secret.get_secret_value()
    return data


def parse_config(data: dict[str, Any], source: str) -> Config:
    """Validate an already-parsed mapping; ``source`` names it in error messages."""
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from exc


def _describe(exc: ValidationError, source: str) -> str:
    problems = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"])
        if error["type"] == "extra_forbidden":
            problems.append(f"{source}: unknown key '{key}'")
        elif key:
            problems.append(f"{source}: key '{key}': {error['msg']}")
        else:  # a rule across sections
            problems.append(f"{source}: {error['msg'].removeprefix('Value error, ')}")
    return "; ".join(problems)

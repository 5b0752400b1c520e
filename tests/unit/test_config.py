"""Configuration: where it is found, its defaults, and the errors a person sees."""

from __future__ import annotations

from pathlib import Path

import pytest

from m2m.config import Config, ConfigError, dump_with_secrets, load_config, parse_config
from tests.conftest import run_m2m


@pytest.fixture(autouse=True)
def _no_ambient_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("M2M_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)


def test_defaults_work_against_the_local_stack() -> None:
    config = load_config()
    assert config.cassandra.contact_points == ["127.0.0.1"]
    assert config.cassandra.port == 9042
    assert config.cassandra.keyspace == "m2m"
    assert config.cassandra.replication == {"class": "SimpleStrategy", "replication_factor": 1}
    assert config.cassandra.consistency == "LOCAL_QUORUM"
    assert config.cassandra.username is None and config.cassandra.password is None
    assert config.nsq.nsqd_tcp_addresses == ["127.0.0.1:4150"]
    assert config.nsq.lookupd_http_addresses == ["127.0.0.1:4161"]
    assert config.receivers.m2mp.listen == "tcp:3010"
    assert config.receivers.alip.listen == "tcp:3050"


def test_precedence_explicit_then_environment_then_local_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "m2m.yaml").write_text("cassandra: {keyspace: from_local}\n")
    assert load_config().cassandra.keyspace == "from_local"
    env_file = tmp_path / "env.yaml"
    env_file.write_text("cassandra: {keyspace: from_env}\n")
    monkeypatch.setenv("M2M_CONFIG", str(env_file))
    assert load_config().cassandra.keyspace == "from_env"
    explicit = tmp_path / "explicit.yaml"
    explicit.write_text("cassandra: {keyspace: from_option}\n")
    assert load_config(explicit).cassandra.keyspace == "from_option"


def test_a_partial_file_keeps_the_other_defaults(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("cassandra: {port: 19042}\nreceivers: {m2mp: {listen: 'tcp:4010'}}\n")
    config = load_config(path)
    assert config.cassandra.port == 19042
    assert config.cassandra.keyspace == "m2m"
    assert config.receivers.m2mp.listen == "tcp:4010"
    assert config.receivers.alip.listen == "tcp:3050"


def test_a_receiver_listens_on_one_endpoint_string(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("receivers: {m2mp: {listen: 'ssl:3011:privateKey=k.pem'}}\n")
    m2mp = load_config(path).receivers.m2mp
    assert m2mp.listen == "ssl:3011:privateKey=k.pem"
    assert m2mp.endpoints == ("ssl:3011:privateKey=k.pem",)


def test_a_receiver_listens_on_a_list_of_endpoint_strings_in_order(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "receivers:\n"
        "  alip: {listen: ['tcp:3050', 'ssl:3051:privateKey=k.pem'], client_ca: ca.pem}\n"
    )
    alip = load_config(path).receivers.alip
    assert alip.endpoints == ("tcp:3050", "ssl:3051:privateKey=k.pem")
    assert alip.client_ca == Path("ca.pem")


def test_a_receiver_listening_on_no_endpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("receivers: {m2mp: {listen: []}}\n")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert str(raised.value) == (
        f"{path}: key 'receivers.m2mp.listen': "
        "Value error, an endpoint string (tcp:3010) or a non-empty list of them"
    )


def test_an_empty_file_means_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_config(path) == Config()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cassandra: {prot: 9042}\n", "unknown key 'cassandra.prot'"),
        ("casandra: {}\n", "unknown key 'casandra'"),
        ("cassandra: {port: nine}\n", "key 'cassandra.port'"),
        ("cassandra: {contact_points: 5}\n", "key 'cassandra.contact_points'"),
        ("receivers: {m2mp: {listen: [1]}}\n", "key 'receivers.m2mp.listen'"),
        ("receivers: {enrollment: sometimes}\n", "key 'receivers.enrollment'"),
        ("sync: {sites: [a/b]}\n", "key 'sync.sites.0'"),
        ("sync: {rules: {status: sideways}}\n", "key 'sync.rules.status'"),
        (
            f"nsq: {{topic_prefix: staging.}}\nsync: {{sites: [{'s' * 48}]}}\n",
            "longer than nsqd's 64 characters",
        ),
        ("- just\n- a list\n", "must be a mapping"),
        ("cassandra: {port: [\n", "not valid YAML"),
    ],
)
def test_errors_name_the_key_and_the_file(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert str(path) in str(raised.value)
    assert expected in str(raised.value)


def test_a_platform_with_sync_journals_its_registry_changes(tmp_path: Path) -> None:
    assert not Config().cassandra.registry_journal
    for text in ("sync: {sites: [depot]}\n", "sync: {upstream: {}}\n"):
        path = tmp_path / "sync.yaml"
        path.write_text(text)
        assert load_config(path).cassandra.registry_journal


def test_a_missing_file_is_an_error_not_the_defaults(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


def test_the_command_shows_one_line_and_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("nsq: {nsqd_tcp_addresses: [127.0.0.1:4150], extra: 1}\n")
    result = run_m2m("stack", "status", config=path, check=False)
    assert result.returncode == 1
    stderr = result.stderr.decode()
    assert f"{path}: unknown key 'nsq.extra'" in stderr
    assert "Traceback" not in stderr
    assert result.stdout == b""


# --- secrets: ${ENV_VAR}, {file: PATH}, never shown, never world-readable ----------------

SECRET = "s3cret-Pa55word"


def owner_only(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_a_value_may_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("M2M_TEST_PASSWORD", SECRET)
    monkeypatch.setenv("M2M_TEST_PORT", "19042")
    path = tmp_path / "c.yaml"
    path.write_text(
        "cassandra:\n"
        "  username: m2m\n"
        "  password: ${M2M_TEST_PASSWORD}\n"
        "  port: ${M2M_TEST_PORT}\n"
        "  keyspace: ${M2M_TEST_UNSET_KEYSPACE:-from_default}\n"
    )
    path.chmod(0o644)  # nothing secret is written in it
    cassandra = load_config(path).cassandra
    assert cassandra.password is not None and cassandra.password.get_secret_value() == SECRET
    assert cassandra.port == 19042
    assert cassandra.keyspace == "from_default"


def test_a_value_may_come_from_a_file_relative_to_the_config(tmp_path: Path) -> None:
    owner_only(tmp_path / "cassandra-password", f"{SECRET}\n")
    path = tmp_path / "c.yaml"
    path.write_text("cassandra: {password: {file: cassandra-password}}\n")
    path.chmod(0o644)
    password = load_config(path).cassandra.password
    assert password is not None and password.get_secret_value() == SECRET


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("${M2M_TEST_UNSET}", "cassandra.password: environment variable M2M_TEST_UNSET is not set"),
        ("{file: absent}", "cassandra.password: cannot read {dir}/absent: No such file"),
    ],
)
def test_a_missing_variable_or_file_names_the_key(
    tmp_path: Path, value: str, expected: str
) -> None:
    path = owner_only(tmp_path / "c.yaml", f"cassandra:\n  password: {value}\n")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert str(raised.value).startswith(f"{path}: ")
    assert expected.format(dir=tmp_path) in str(raised.value)


@pytest.mark.parametrize(
    "password",
    [SECRET, "${M2M_TEST_UNSET:-" + SECRET + "}"],
    ids=["literal", "default-of-a-variable"],
)
def test_a_world_readable_file_holding_a_password_is_refused(tmp_path: Path, password: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"cassandra: {{username: m2m, password: '{password}'}}\n")
    path.chmod(0o644)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert str(raised.value) == (
        f"{path}: holds a password and is readable by every user: chmod o-r {path}"
    )
    assert SECRET not in str(raised.value)
    path.chmod(0o640)
    assert load_config(path).cassandra.username == "m2m"


def test_a_world_readable_secret_file_is_refused(tmp_path: Path) -> None:
    secret_file = tmp_path / "cassandra-password"
    secret_file.write_text(SECRET)
    secret_file.chmod(0o644)
    path = owner_only(tmp_path / "c.yaml", f"cassandra: {{password: {{file: {secret_file}}}}}\n")
    with pytest.raises(ConfigError, match=f"^{secret_file}: holds a password and is readable"):
        load_config(path)


def test_a_secret_never_shows_in_repr_dumps_or_errors(tmp_path: Path) -> None:
    path = owner_only(tmp_path / "c.yaml", f"cassandra: {{password: {SECRET}}}\n")
    config = load_config(path)
    assert SECRET not in repr(config) and SECRET not in str(config)
    assert SECRET not in str(config.model_dump()) and SECRET not in str(config.model_dump_json())
    for text in (
        f"cassandra: {{password: {SECRET}, port: nine}}\n",
        f"cassandra: {{password: [{SECRET}]}}\n",
        f"cassandra:\n  password: {SECRET}: x\n",  # PyYAML quotes the line
    ):
        owner_only(path, text)
        with pytest.raises(ConfigError) as raised:
            load_config(path)
        assert SECRET not in str(raised.value)


def test_a_dump_for_another_process_keeps_the_secret(tmp_path: Path) -> None:
    path = owner_only(tmp_path / "c.yaml", f"cassandra: {{username: m2m, password: {SECRET}}}\n")
    config = load_config(path)
    settings = dump_with_secrets(config, exclude_defaults=True)
    assert settings == {"cassandra": {"username": "m2m", "password": SECRET}}
    assert parse_config(settings, source="dump") == config
    assert dump_with_secrets(Config(), exclude_defaults=True) == {}

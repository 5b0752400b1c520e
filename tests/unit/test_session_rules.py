"""The session rules of both protocols, without a reactor, a socket or a database."""

from __future__ import annotations

import pytest

from m2m.config import TimingConfig
from m2m.receivers.alip.protocol import ALIPProtocol
from m2m.receivers.m2mp.protocol import M2MPProtocol
from m2m.receivers.session_rules import Close, Greeting, Ping, SessionRules, Verdict

TIMING = TimingConfig(
    ping_after_silence=900,
    ping_quiet_period=30,
    setting_resend_interval=40,
    identification_timeout=30,
    disconnect_after_silence=43200,
    unidentified_frames_allowed=5,
)
START = 1000.0


def m2mp(timing: TimingConfig = TIMING) -> SessionRules:
    return SessionRules(M2MPProtocol.rules, timing, START)


def alip(timing: TimingConfig = TIMING) -> SessionRules:
    return SessionRules(ALIPProtocol.rules, timing, START)


def identified(rules: SessionRules) -> SessionRules:
    rules.greet({}, {}, {}, {}, START)
    return rules


# -- identify first ----------------------------------------------------------------------


@pytest.mark.parametrize("rules", [m2mp(), alip()], ids=["m2mp", "alip"])
def test_what_needs_no_identity_is_handled_before_identification(rules: SessionRules) -> None:
    assert [rules.arrived(needs_identity=False) for _ in range(20)] == [Verdict.HANDLE] * 20


def test_m2mp_ignores_the_allowance_of_data_before_identification_then_closes() -> None:
    rules = m2mp()
    verdicts = [rules.arrived(needs_identity=True) for _ in range(6)]
    assert verdicts == [Verdict.REFUSE] * 5 + [Verdict.CLOSE]
    assert rules.refused_unidentified == 6


def test_m2mp_with_no_allowance_closes_on_the_first_data() -> None:
    rules = m2mp(TIMING.model_copy(update={"unidentified_frames_allowed": 0}))
    assert rules.arrived(needs_identity=True) is Verdict.CLOSE


def test_alip_refuses_each_command_before_identification_and_keeps_the_connection() -> None:
    rules = alip()
    assert {rules.arrived(needs_identity=True) for _ in range(50)} == {Verdict.REFUSE}


@pytest.mark.parametrize("rules", [m2mp(), alip()], ids=["m2mp", "alip"])
def test_everything_is_handled_once_identified(rules: SessionRules) -> None:
    rules.arrived(needs_identity=True)
    identified(rules)
    assert rules.arrived(needs_identity=True) is Verdict.HANDLE


# -- timers ------------------------------------------------------------------------------


@pytest.mark.parametrize("rules", [m2mp(), alip()], ids=["m2mp", "alip"])
def test_not_identified_in_time_closes(rules: SessionRules) -> None:
    assert rules.tick(START + 29.9) is None
    assert rules.tick(START + 30) == Close("identification_timeout")


@pytest.mark.parametrize("rules", [m2mp(), alip()], ids=["m2mp", "alip"])
def test_an_identified_device_is_not_timed_out(rules: SessionRules) -> None:
    identified(rules)
    assert rules.tick(START + 31) is None


def test_alip_closes_a_silent_connection_m2mp_does_not() -> None:
    silent = START + 43200
    alip_rules, m2mp_rules = identified(alip()), identified(m2mp())
    assert alip_rules.tick(silent) == Close("silent")
    assert m2mp_rules.tick(silent) == Ping(0)


def test_a_device_heard_from_lately_is_not_closed_for_silence() -> None:
    rules = identified(alip())
    rules.received(START + 43000)
    assert rules.tick(START + 43200) is None


@pytest.mark.parametrize("rules", [m2mp(), alip()], ids=["m2mp", "alip"])
def test_silence_on_both_sides_brings_a_ping(rules: SessionRules) -> None:
    identified(rules)
    assert rules.tick(START + 899) is None
    assert rules.tick(START + 900) == Ping(0)


def test_no_ping_while_we_spoke_lately() -> None:
    rules = identified(m2mp())
    rules.sent(START + 880)
    assert rules.tick(START + 900) is None  # we spoke 20 s ago: quiet period is 30 s
    assert rules.tick(START + 910) == Ping(0)


def test_a_ping_counts_as_speaking_only_once_sent() -> None:
    rules = identified(m2mp())
    assert rules.tick(START + 900) == Ping(0)
    rules.sent(START + 900)
    assert rules.tick(START + 905) is None
    assert rules.tick(START + 930) == Ping(1)


def test_m2mp_ping_counter_wraps_at_a_byte_alip_grows() -> None:
    m2mp_rules, alip_rules = identified(m2mp()), identified(alip())
    late = START + 1000
    m2mp_counters = [m2mp_rules.tick(late) for _ in range(258)]
    assert m2mp_counters[255:] == [Ping(255), Ping(0), Ping(1)]
    alip_counters = [alip_rules.tick(late) for _ in range(258)]
    assert alip_counters[-1] == Ping(257)


# -- what to send when -------------------------------------------------------------------


def test_greeting_of_a_device_with_nothing_on_record_asks_everything() -> None:
    assert m2mp().greet({}, {}, {}, {}, START) == Greeting([], [], True, True)


def test_greeting_sends_pending_settings_and_commands_in_order_and_asks_what_is_missing() -> None:
    greeting = m2mp().greet(
        settings={"b": "2", "a": "1"},
        settings_to_send={"b": "2", "a": "1"},
        commands={"c2": "reboot", "c1": "status"},
        status={"cap": "sen:loc"},
        now=START,
    )
    assert greeting == Greeting(
        settings=[("a", "1"), ("b", "2")],
        commands=[("c1", "status"), ("c2", "reboot")],
        ask_capabilities=False,
        ask_all_settings=False,
    )


def test_a_setting_pushed_is_not_pushed_again_within_the_resend_interval() -> None:
    rules = m2mp()
    rules.greet({}, {"a": "1"}, {}, {}, START)
    assert rules.settings_due({"a": "1"}, START + 39) == []
    assert rules.settings_due({"a": "1"}, START + 40) == [("a", "1")]


def test_a_new_value_is_pushed_at_once() -> None:
    rules = m2mp()
    rules.greet({}, {"a": "1"}, {}, {}, START)
    assert rules.settings_due({"a": "2"}, START + 1) == [("a", "2")]


def test_without_a_resend_interval_every_push_sends_again() -> None:
    rules = m2mp(TIMING.model_copy(update={"setting_resend_interval": 0}))
    assert rules.settings_due({"a": "1"}, START) == [("a", "1")]
    assert rules.settings_due({"a": "1"}, START) == [("a", "1")]


def test_a_command_goes_once_per_connection() -> None:
    rules = m2mp()
    greeting = rules.greet({}, {}, {"c1": "reboot"}, {}, START)
    assert greeting.commands == [("c1", "reboot")]
    assert rules.commands_new({"c1": "reboot", "c2": "status"}) == [("c2", "status")]
    assert rules.commands_new({"c1": "reboot", "c2": "status"}) == []
    assert SessionRules(M2MPProtocol.rules, TIMING, START).commands_new({"c1": "x"}) == [
        ("c1", "x")
    ]

"""Channel translation: the topic a device's channel goes to, and a bounded memory of them."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from m2m.registry.routes import ChannelRouter, InvalidRouteError, Route, parse_routes


def test_the_first_matching_rule_in_priority_order_gives_the_topic() -> None:
    own = parse_routes({"0020_^sen:": "sensors", "0010_^sen:loc$": "locations", "bad": "x"})
    router = ChannelRouter(own, [])
    assert router.topic_for("sen:loc") == "locations"
    assert router.topic_for("sen:temp") == "sensors"
    assert router.topic_for("_special") is None


def test_the_device_s_own_rules_win_over_the_default_device_s() -> None:
    own = [Route(9000, "temp", "own-topic")]
    default = [Route(1, "temp", "default-topic"), Route(2, "volt", "default-volt")]
    router = ChannelRouter(own, default)
    assert router.topic_for("sen:temp") == "own-topic"
    assert router.topic_for("sen:volt") == "default-volt"


def test_a_regex_matches_anywhere_in_the_channel_as_the_original_platform_did() -> None:
    router = ChannelRouter([Route(1, "oc", "t")], [])
    assert router.topic_for("sen:loc") == "t"
    assert router.topic_for("sen:temp") is None


def test_a_rule_whose_regex_does_not_compile_is_skipped() -> None:
    router = ChannelRouter([Route(1, "([", "broken"), Route(2, "x", "works")], [])
    assert router.topic_for("x([") == "works"


def test_no_rule_means_no_topic() -> None:
    assert ChannelRouter([], []).topic_for("sen:loc") is None


def test_rules_are_checked_before_they_are_stored() -> None:
    assert Route.checked(5, "^sen:", "sensors").key == "0005_^sen:"
    with pytest.raises(InvalidRouteError):
        Route.checked(10_000, "x", "t")
    with pytest.raises(InvalidRouteError):
        Route.checked(1, "(", "t")
    with pytest.raises(InvalidRouteError):
        Route.checked(1, "x", "bad topic")


def test_at_most_cache_size_channels_are_remembered() -> None:
    router = ChannelRouter([Route(1, "^sen:", "sensors")], [], cache_size=4)
    for n in range(100):
        assert router.topic_for(f"sen:{n}") == "sensors"
        assert router.topic_for(f"other:{n}") is None
    info = router.topic_for.cache_info()  # type: ignore[attr-defined]
    assert info.maxsize == 4
    assert info.currsize == 4


def test_a_channel_used_again_is_answered_from_memory() -> None:
    router = ChannelRouter([Route(1, "^sen:", "sensors")], [], cache_size=2)
    router.topic_for("sen:loc")
    router.topic_for("sen:loc")
    router.topic_for("sen:temp")
    router.topic_for("sen:loc")
    info = router.topic_for.cache_info()  # type: ignore[attr-defined]
    assert (info.hits, info.misses, info.currsize) == (2, 2, 2)


def test_the_channels_used_last_are_the_ones_remembered() -> None:
    router = ChannelRouter([Route(1, "^sen:", "sensors")], [], cache_size=2)
    for channel in ("a", "b", "a", "c"):  # "b" is the least recently used when "c" comes
        router.topic_for(channel)
    router.topic_for("a")
    router.topic_for("b")
    info = router.topic_for.cache_info()  # type: ignore[attr-defined]
    assert (info.hits, info.misses) == (2, 4)


def test_a_cache_of_zero_remembers_nothing_and_still_routes() -> None:
    router = ChannelRouter([Route(1, "^sen:", "sensors")], [], cache_size=0)
    assert router.topic_for("sen:loc") == "sensors"
    assert router.topic_for("sen:loc") == "sensors"
    assert router.topic_for.cache_info().currsize == 0  # type: ignore[attr-defined]


def test_each_router_has_its_own_memory() -> None:
    first = ChannelRouter([Route(1, "x", "first")], [], cache_size=8)
    second = ChannelRouter([Route(1, "x", "second")], [], cache_size=8)
    assert first.topic_for("x") == "first"
    assert second.topic_for("x") == "second"
    assert first.topic_for.cache_info().currsize == 1  # type: ignore[attr-defined]


_ROUTES = st.lists(
    st.builds(
        Route,
        st.integers(0, 9999),
        st.sampled_from(["^sen:", "loc", "temp$", "^_", "[0-9]", "(", "."]),
        st.sampled_from(["a", "b", "c"]),
    ),
    max_size=5,
)
_CHANNELS = st.sampled_from(["sen:loc", "sen:temp", "_special", "x1", "", "lsen:p"]) | st.text(
    max_size=6
)


@given(_ROUTES, _ROUTES, st.integers(0, 4), st.lists(_CHANNELS, max_size=40))
def test_a_bounded_memory_never_changes_the_topic_given(
    own: list[Route], default: list[Route], cache_size: int, channels: list[str]
) -> None:
    router = ChannelRouter(own, default, cache_size)
    for channel in channels:
        expected = None
        for route in (*own, *default):
            try:
                if re.search(route.regex, channel):
                    expected = route.topic
                    break
            except re.error:
                continue
        assert router.topic_for(channel) == expected
    assert router.topic_for.cache_info().currsize <= cache_size  # type: ignore[attr-defined]

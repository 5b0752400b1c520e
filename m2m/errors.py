"""The root of the platform's own errors: one clear line for the person who meets it.

Two kinds tell whoever handles them whether trying again can help:
:class:`InvalidInput` never succeeds as it is (a bus message is finished, a device is
answered ``ERR``), :class:`Unavailable` may succeed later (a bus message is tried again
for as long as the outage lasts).
"""


class M2MError(Exception):
    """An error whose message is fit to show a user as it is, without a traceback."""


class InvalidInput(M2MError):
    """Input refused as it is: a parser's or a store's rule forbids it. Retrying never helps."""


class Unavailable(M2MError):
    """A service the platform needs (Cassandra, nsqd) did not do its part: try again later."""

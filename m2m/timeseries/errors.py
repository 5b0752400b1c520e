"""The one error the time series raise for bad input: a message fit to show as it is."""

from m2m.errors import InvalidInput


class TimeSeriesError(InvalidInput, ValueError):
    """A record, a time or a range the time series cannot take (naive time, bad JSON, …).

    It is also a ValueError, so callers that validate input generically catch it too.
    """

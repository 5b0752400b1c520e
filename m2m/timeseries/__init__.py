"""Time series: month-bucketed records of what devices report, on Cassandra.

``TimeSeries`` saves, reads (lazily, newest or oldest first) and deletes ``Record`` s in
the original platform's layout; see ``store`` for the layout and ``timeuuids`` for the
record UUIDs.
"""

from m2m.timeseries.errors import TimeSeriesError
from m2m.timeseries.record import JsonValue, Record
from m2m.timeseries.store import TimeSeries
from m2m.timeseries.timerange import TimeRange

__all__ = ["JsonValue", "Record", "TimeRange", "TimeSeries", "TimeSeriesError"]

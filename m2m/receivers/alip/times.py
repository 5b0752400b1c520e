"""The times ALIP devices put in `E`, `J` and `G` data, read as UTC datetimes.

Devices write whichever format their clock or GPS module gives them, so the length
of the text tells the format apart: 10-11 digits are unix seconds, 12 characters are
`YYMMDDhhmmss` (the GPS NMEA date and time glued together), 14 or more are
`YYYYMMDDhhmmss`, optionally followed by a fraction of a second (`.123`), which the
original platform tolerated too. All are UTC.

Errors are plain `ValueError`s whose message can be shown to the device as is: this
module knows nothing about the protocol's error answers.
"""

from datetime import UTC, datetime

_EXPECTED_FORMATS = "expected unix seconds (10-11 digits), YYMMDDhhmmss or YYYYMMDDhhmmss (UTC)"
_UNIX_SECONDS_LENGTHS = (10, 11)
_SHORT_LENGTH = 12
_LONG_LENGTH = 14
_FRACTION_SEPARATORS = (".", ",")
_MICROSECOND_DIGITS = 6


def parse_device_time(text: str) -> datetime:
    """Read a device time in any of the three formats as a timezone-aware UTC datetime.

    Raises `ValueError` with a reason fit for the device when the text is in none of
    the formats or names a date that does not exist (a 13th month, the 30th of February).
    """
    length = len(text)
    if length in _UNIX_SECONDS_LENGTHS:
        _require_digits(text, text)
        return datetime.fromtimestamp(int(text), UTC)
    if length == _SHORT_LENGTH:
        _require_digits(text, text)
        return _calendar_time(text, _two_digit_year(int(text[0:2])), text[2:])
    if length >= _LONG_LENGTH:
        digits = text[:_LONG_LENGTH]
        _require_digits(digits, text)
        microsecond = _fraction_microseconds(text[_LONG_LENGTH:], text)
        return _calendar_time(text, int(digits[0:4]), digits[4:], microsecond)
    raise ValueError(f'Invalid time "{text}": {_EXPECTED_FORMATS}')


def _require_digits(digits: str, text: str) -> None:
    # isdigit() alone accepts non-ASCII digits such as "²" or "٣", which no device sends.
    if not (digits.isascii() and digits.isdigit()):
        raise ValueError(f'Invalid time "{text}": {_EXPECTED_FORMATS}')


def _two_digit_year(year: int) -> int:
    """Place a two-digit year the way POSIX (and the original Go platform) do: 69-99 → 19xx."""
    return year + (1900 if year >= 69 else 2000)


def _fraction_microseconds(fraction: str, text: str) -> int:
    if not fraction:
        return 0
    digits = fraction[1:]
    if fraction[0] not in _FRACTION_SEPARATORS or not (digits.isascii() and digits.isdigit()):
        raise ValueError(
            f'Invalid time "{text}": only a fraction of a second (".123") may follow YYYYMMDDhhmmss'
        )
    return int(digits[:_MICROSECOND_DIGITS].ljust(_MICROSECOND_DIGITS, "0"))


def _calendar_time(text: str, year: int, month_to_second: str, microsecond: int = 0) -> datetime:
    """Build the datetime from `MMDDhhmmss`, turning an impossible date into a clear reason."""
    try:
        return datetime(
            year,
            int(month_to_second[0:2]),
            int(month_to_second[2:4]),
            int(month_to_second[4:6]),
            int(month_to_second[6:8]),
            int(month_to_second[8:10]),
            microsecond,
            tzinfo=UTC,
        )
    except ValueError as error:
        raise ValueError(f'Invalid time "{text}": {error}') from None

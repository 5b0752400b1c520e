"""The root of the platform's own errors: one clear line for the person who meets it."""


class M2MError(Exception):
    """An error whose message is fit to show a user as it is, without a traceback."""

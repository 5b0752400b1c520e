"""m2m: connects fleets of machine-to-machine devices and keeps their data."""

__version__ = "0.1.0"

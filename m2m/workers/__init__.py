"""The bus workers: the M2MP converter and the time-series storage consumer."""

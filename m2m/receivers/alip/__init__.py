"""ALIP, the text-line device protocol: parser, times, data processors, server lines."""

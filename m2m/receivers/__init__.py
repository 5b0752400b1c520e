"""The device protocols: pure codecs and the Twisted adapters that run device sessions."""

"""The NSQ bus: the envelope, topics, and a publisher and consumers on the asyncio loop."""

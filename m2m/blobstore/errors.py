"""What can be wrong with a blob, each with a message fit for the person who asked for it."""

from m2m.errors import M2MError


class BlobError(M2MError):
    """A blob cannot be used as asked."""


class BlobNotFoundError(BlobError):
    def __init__(self, path: str) -> None:
        super().__init__(f"no file at {path}: the registry node does not exist")
        self.path = path


class NotABlobError(BlobError):
    def __init__(self, path: str) -> None:
        super().__init__(f"registry node {path} is not a file")
        self.path = path


class IncompleteBlobError(BlobError):
    """The file's last write never finished (``getOk`` unset): its content cannot be trusted."""

    def __init__(self, path: str) -> None:
        super().__init__(f"file {path} is incomplete: its upload never finished (getOk unset)")
        self.path = path


class CorruptBlobError(BlobError):
    """The stored blocks or values contradict each other."""

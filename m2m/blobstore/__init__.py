"""Files on registry nodes, stored as blocks: the firmware and anything else devices fetch.

``open_blob`` gives an async file (read, write, seek, truncate, range reads);
``stat_blob`` and ``delete_blob`` need only the node's values.
"""

from m2m.blobstore.errors import (
    BlobError,
    BlobNotFoundError,
    CorruptBlobError,
    IncompleteBlobError,
    NotABlobError,
)
from m2m.blobstore.file import BlobFile, Mode, open_blob
from m2m.blobstore.metadata import DEFAULT_BLOCK_SIZE, BlobStat, delete_blob, stat_blob

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "BlobError",
    "BlobFile",
    "BlobNotFoundError",
    "BlobStat",
    "CorruptBlobError",
    "IncompleteBlobError",
    "Mode",
    "NotABlobError",
    "delete_blob",
    "open_blob",
    "stat_blob",
]

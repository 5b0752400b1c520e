"""An edge site's link to the cloud platform (the ``sync`` service)."""

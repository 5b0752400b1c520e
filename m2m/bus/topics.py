"""The topics and calls of the bus (bus.md), named once for every producer and consumer."""

from __future__ import annotations

from typing import Final

EVENTS: Final = "events"
CONVERTER_M2MP: Final = "converter-m2mp"
STORAGE: Final = "storage"
RECEIVERS: Final = "receivers"

# events
DEVICE_CONNECTED: Final = "device_connected"
DEVICE_IDENTIFIED: Final = "device_identified"
DEVICE_DISCONNECTED: Final = "device_disconnected"
NEW_RECEIVER: Final = "new_receiver"
# events beyond the original platform's (its consumers ignore calls they don't know)
RECEIVER_ALIVE: Final = "receiver_alive"
SETTING_ACKED: Final = "setting_acked"
COMMAND_ANSWERED: Final = "command_answered"
STATUS_CHANGED: Final = "status_changed"

# converter-m2mp
DATA_SIMPLE: Final = "data_simple"
DATA_ARRAY: Final = "data_array"

# storage
STORE_TS: Final = "store_ts"

# receivers (control)
DISCONNECT: Final = "disconnect"
SEND_SETTINGS: Final = "send_settings"
SEND_COMMANDS: Final = "send_commands"

# sync (an edge site's link to its cloud platform, on the cloud's nsqd)
SYNC_UP: Final = "sync-up"
"""Registry changes and check requests, from every site to the cloud."""
SYNC_DOWN: Final = "sync-down-"
"""``sync-down-<site>``: registry changes, from the cloud to one site."""
SYNC_CHECK: Final = "sync-check-"
"""``sync-check-<site>``: the cloud's answers to the site's checks."""
REGISTRY_CHANGE: Final = "registry_change"
CHECK_SUMMARY: Final = "check_summary"
CHECK_BUCKETS: Final = "check_buckets"
CHECK_DEVICES: Final = "check_devices"

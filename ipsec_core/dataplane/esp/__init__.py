"""ESP (RFC 4303): `engine` is the one-packet-at-a-time reference; `fast` (the per-packet batch
loop), `vec` (the numpy-vectorised batch paths) and `offload` (backends that compute whole
batches) are the batch strategies, each tested byte for byte against `engine`."""
from ipsec_core.dataplane.esp.engine import NAT_KEEPALIVE, NON_ESP_MARKER, EspEngine

__all__ = ["EspEngine", "NAT_KEEPALIVE", "NON_ESP_MARKER"]

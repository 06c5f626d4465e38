"""Code generated from proto/sockbroker/v1/broker.proto by scripts/genproto.py (do not edit).

The proto package is ``sockbroker.v1``; the Python package is ``sockbroker_wire.v1``.
"""

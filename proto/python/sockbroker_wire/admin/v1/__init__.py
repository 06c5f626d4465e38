"""Code generated from proto/sockbroker/admin/v1/admin.proto by scripts/genproto.py (do not edit).

The proto package is ``sockbroker.admin.v1``; the Python package is ``sockbroker_wire.admin.v1``.
"""

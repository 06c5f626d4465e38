"""The core: sessions, custodians, handles, policy, and the TCP/UDP/sync semantics.

It knows nothing of gRPC, HTTP, protobuf or pydantic; the front doors translate to and from it.
"""

__all__: list[str] = []

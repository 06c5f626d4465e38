"""The front doors: each translates its transport to the core's typed API and back.

``dispatch`` maps every unary RPC to its core method, once; ``grpc`` and ``rest`` serve the
proto's RPCs over gRPC and over REST + WebSocket.
"""

__all__: list[str] = []

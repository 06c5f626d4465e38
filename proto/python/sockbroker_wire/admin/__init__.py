"""The admin API's generated code (:mod:`.v1`), from ``proto/sockbroker/admin/v1/admin.proto``."""

__all__: list[str] = []

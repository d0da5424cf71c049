"""The control plane: a thin asyncio shell that moves bytes and time for proto.Session."""

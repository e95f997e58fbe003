"""The synchronous channel shell (grpc sync I/O only)."""

"""asyncio twin."""

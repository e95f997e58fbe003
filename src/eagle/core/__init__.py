"""eagle's sans-IO core: no grpc calls, no threads started, no asyncio, no sleeping.

State transitions, picking, retry and backoff decisions, outlier math and membership
verdicts live here once and serve both the sync and the asyncio channel.
"""

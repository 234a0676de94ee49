"""Writes out: the forge client, the persisted outbox, and what the bot says in threads (links,
replies, summaries).
"""

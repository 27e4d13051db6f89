"""Phase 2: the matching engine, a plain-data core (no boto3, Django, Channels, clock or random)."""

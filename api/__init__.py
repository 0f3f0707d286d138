"""The HTTP API (TickeTing REST API v3): routes translate HTTP to calls, nothing more."""

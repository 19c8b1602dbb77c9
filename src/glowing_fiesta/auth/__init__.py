"""API key tokens and per-key rate limits."""

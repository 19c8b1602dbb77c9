"""`glowing-fiesta bench`: the load generator that measures speed and memory."""

"""Ingress: the point rules and the parsers of every wire format we accept."""

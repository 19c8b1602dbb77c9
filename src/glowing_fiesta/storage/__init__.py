"""Durable storage: tables, migrations and the engines behind one narrow interface."""

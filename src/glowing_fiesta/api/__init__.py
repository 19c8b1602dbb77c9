"""The HTTP API: Starlette routes, authentication, errors, OpenAPI."""

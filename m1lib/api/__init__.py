"""M1's HTTP API: the FastAPI app, its routes and the problem+json error format."""

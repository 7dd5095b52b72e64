"""Feature modules: each owns its models, services, schemas and controller."""

"""The JSON Schema of the spec format (``spec.schema.json``)."""

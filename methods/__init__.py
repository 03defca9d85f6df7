"""Built-in erasure methods: one module per method."""

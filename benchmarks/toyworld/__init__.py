"""The toy world: a tiny SD-architecture model trained here, where erasure is measurable on a CPU."""

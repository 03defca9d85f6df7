"""Built-in benchmarks, scorers and concept sets."""

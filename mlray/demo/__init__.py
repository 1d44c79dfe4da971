"""The whole loop on synthetic card transactions: the project `mlray demo` and the quickstart notebook build, and the
labelled traffic they send. A library for both; only the CLI prints."""

"""Serving on Ray Serve: an ingress (auth, limits, validation, routing, logging) and one app per model version."""

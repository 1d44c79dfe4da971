"""Training on Ray Train (Lightning), evaluation, and registration through the registry's gate."""

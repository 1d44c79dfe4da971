"""Monitoring and the closed loop: drift and live quality on served traffic, incidents, and retraining jobs."""

"""The kopf operator: handlers, the task lifecycle, the Temporal follower."""

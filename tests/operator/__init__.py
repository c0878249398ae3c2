"""What an operator sees and does: the CLI, status page, metrics, alerts, logs."""

"""Long-running processes (relay, projector) and the operator tools."""

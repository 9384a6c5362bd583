"""Event contracts shared by every side: event classes, the state they fold into, and the
Kafka message format. An event's topic (module and name) is a stored contract."""

"""The write model: commands, aggregates with their pure decisions, handlers, and the
event-sourced application that stores them."""

"""The read API: queries answered from the read models through the Redis cache."""

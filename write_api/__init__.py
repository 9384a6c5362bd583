"""The write API: routes that turn requests into commands. Routing, auth and errors only."""

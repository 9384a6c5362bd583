"""Cross-cutting pieces: settings, auth, errors, composition roots, the CLI."""

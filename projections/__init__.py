"""Read models: their schema (migrations), the projections that write them and the queries
that read them, one module per read model."""

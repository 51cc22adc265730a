"""Results: records, the atomic writer, the run schema, reading runs, comparability, compare, noise, the gate, reports."""

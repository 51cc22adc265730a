"""Results: records, the atomic writer, the run schema, reading runs, comparability, tolerances, compare, noise, the gate, reports."""

"""Results: records, the atomic writer, reading runs, compare, run-to-run noise, the gate, reports."""

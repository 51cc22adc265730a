"""The kinds of case: one module each turns a :class:`~harness.cases.CaseSpec` into a flat record."""

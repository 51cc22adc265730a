"""The matrix room: case identity (:mod:`~harness.matrix.cases`: ``CaseSpec``, markers) and its
expansion from the session's ``Settings`` into one case list per kind (:mod:`~harness.matrix.expand`)."""

"""The scale room: splitting a session's cases into balanced shards by a cost model
(:mod:`~harness.scale.shards`) and launching the shards on submitit (:mod:`~harness.scale.launch`)."""

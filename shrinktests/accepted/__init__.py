"""The accepted state: each config's accepted record on disk (``record``), how this run's output
is judged against it (``replay``) and the session's view of all records (``state``)."""

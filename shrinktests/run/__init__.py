"""Running a config: the options of a run, model sources, compressed variants (built under
pinned numerics where a CPU would round them differently), greedy generation and
teacher-forced scoring, the results cache and the stored reference."""

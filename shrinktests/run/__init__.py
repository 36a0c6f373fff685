"""Running a config: model sources, compressed variants, greedy generation and teacher-forced
scoring, the results cache and the stored reference, held together by the session."""

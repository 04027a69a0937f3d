"""The task: questions and gold answers (data sources, builtin tasks), the one answer extractor, rewards."""

"""Training dashboard pages, one module per page family: jobs, model versions, workers."""

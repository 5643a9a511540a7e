"""The whole study from one config: validation, jobs, the results store and executors."""

EXECUTORS = ("inline", "processes", "ray")

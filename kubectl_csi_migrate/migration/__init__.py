"""The migration logic: the plan, the checks, the steps and the working directory.

Nothing here parses arguments or prints; it takes clients and returns data.
"""

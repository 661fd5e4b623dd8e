"""Imported by the forkserver of a run's process pool (every job's steps): the definitions
built once there, so each step process forked from it starts in a fraction of a second instead of
importing and loading the code location again."""

from ops_platform.definitions import defs

defs()

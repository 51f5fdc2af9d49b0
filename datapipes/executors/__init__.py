"""Executors: the in-process reference, and the parallel ones behind :class:`Loader`."""

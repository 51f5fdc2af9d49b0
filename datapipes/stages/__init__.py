"""The stages, one module per family. Each public function builds a one-stage :class:`Pipe`."""

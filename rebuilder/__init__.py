"""hermetic's rebuilder: everything after one build, and the command line."""

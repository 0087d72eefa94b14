"""Rebuilder nodes: an HTTP service with its own key, a persistent job queue and workers
that rebuild submitted specs in the sandbox and sign what they found."""

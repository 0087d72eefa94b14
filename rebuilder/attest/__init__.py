"""Attestations: in-toto Statements in DSSE envelopes, signed and verified through
securesystemslib signers and keys."""

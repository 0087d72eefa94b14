"""Every statement hermetic signs or reads, as frozen, typed values with ``to_dict`` and a
validating ``from_dict``: one module per family (provenance, check, rebuild agreement,
gate policy and VSA), on strict field readers (:mod:`rebuilder.formats.fields`). Writers
and readers use the same classes; golden files keep them from drifting apart."""

"""What the rebuilder tests share: a provenance predicate, a variation context, and the
published Sigstore bundles under tests/fixtures/sigstore."""

from __future__ import annotations

from rebuilder.variations import VariationContext
from tests.conftest import REPO

PREDICATE = {
    "buildDefinition": {"buildType": "https://hermetic.dev/t", "externalParameters": {"x": 1}},
    "runDetails": {"builder": {"id": "https://hermetic.dev/builders/test"}},
}

CONTEXT = VariationContext(locales=("C.UTF-8", "en_US.UTF-8", "fr_CH.UTF-8"), cpus=4, faketime=True)

FIXTURES = REPO / "tests" / "fixtures" / "sigstore"
DSSE_BUNDLE = FIXTURES / "a.dsse.staging-rekor-v2.txt.sigstore.json"
BEACON = (
    "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/"
    ".github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main"
)
GITHUB = "https://token.actions.githubusercontent.com"

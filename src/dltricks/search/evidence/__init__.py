"""``dltricks evidence``: the catalogue's tips as claims, each re-tested by a study; see :mod:`.run`."""

from dltricks.search.evidence.claim import Anchor, Claim, Setting, arm
from dltricks.search.evidence.run import CLAIMS, Options, claims, evidence

__all__ = ["CLAIMS", "Anchor", "Claim", "Options", "Setting", "arm", "claims", "evidence"]

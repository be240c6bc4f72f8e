"""Deprecated: import from :mod:`varprobe.claims`. Importing this module warns (DeprecationWarning)."""
import warnings

from ..claims import CLAIMS, PROFILES, Claim, Finding, Profile, reproduce

__all__ = ["Claim", "Finding", "Profile", "PROFILES", "CLAIMS", "reproduce"]

warnings.warn("varprobe.experiment.claims is deprecated: import from varprobe.claims", DeprecationWarning,
              stacklevel=2)

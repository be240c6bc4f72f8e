"""Moved to :mod:`varprobe.claims`; kept so that existing imports work."""
from ..claims import CLAIMS, PROFILES, Claim, Finding, Profile, reproduce

__all__ = ["Claim", "Finding", "Profile", "PROFILES", "CLAIMS", "reproduce"]

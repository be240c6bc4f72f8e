"""The paper's claims as measured rows: the catalogue (each claim with its statistic, threshold,
measurement and figures), the profiles and the runs they need, the attribution controls, and the
``reproduce`` pipeline that writes ``claims.md`` / ``claims.json``."""
from .attribution import COMPARISONS, CONTROLS, Comparison, causes_report
from .catalogue import CLAIMS, Claim
from .fragility import Fragility, fragility
from .pipeline import Finding, reproduce, rows
from .profiles import MAIN_SCHEMES, PROFILES, Profile, plan
from .summary import KINDS, summarize

__all__ = ["CLAIMS", "Claim", "KINDS", "summarize", "Fragility", "fragility", "Finding", "reproduce", "rows", "PROFILES", "Profile", "plan",
           "MAIN_SCHEMES", "CONTROLS", "COMPARISONS", "Comparison", "causes_report"]

"""IANA transform identifiers and sizes (`iana`) and strongSwan's proposal keywords
(`keywords`).  No crypto here: a transform catalogue with plugin transforms is passed in by the
caller, never fetched from the process-wide registry.

`from ipsec_core.transforms import ENCR_INFO` keeps working: the IANA tables are re-exported.
"""
from ipsec_core.transforms.iana import *  # noqa: F401,F403

"""nmt: RNN-attention neural machine translation (Bahdanau et al., 2014)."""

from nmt.errors import NmtError

__all__ = ["NmtError"]
__version__ = "0.1.0"

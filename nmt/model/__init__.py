"""The translation model: bidirectional RNN encoder, attention, RNN decoder (Bahdanau et al., 2014)."""

from nmt.model.seq2seq import Seq2Seq, build_model
from nmt.model.state import DecoderState, EncoderOutput

__all__ = ["DecoderState", "EncoderOutput", "Seq2Seq", "build_model"]

"""gpt2: the public face of gpt2-jax. Re-exports only; the logic lives in `shared/` and the backends."""

from shared import beam_search
from shared.api import GPT2, BeamText, from_canonical, load_checkpoint, load_model, main
from shared.beam_search import BeamParams, Hypothesis
from shared.config import MODEL_SIZES, GPT2Config
from shared.generation import Completion, Generator
from shared.sampling import SamplingParams
from shared.scoring import TextScore
from shared.tokenizer import Tokenizer

__all__ = [
    "GPT2",
    "MODEL_SIZES",
    "BeamParams",
    "BeamText",
    "Completion",
    "GPT2Config",
    "Generator",
    "Hypothesis",
    "SamplingParams",
    "TextScore",
    "Tokenizer",
    "beam_search",
    "from_canonical",
    "load_checkpoint",
    "load_model",
    "main",
]

"""What the benchmarks share: the model shapes they time, and how they set up their PyTorch peer.

The peer uses all cores, with denormals flushed to zero. XLA's CPU backend computes with denormal
floats flushed to zero; PyTorch by default does not. From random weights, a few training steps
produce enough denormal values that PyTorch's backward pass slows down severalfold (see
docs/benchmarks.md). A peer slowed that way would flatter every ratio, so the peer computes as XLA
does.
"""

from __future__ import annotations

import os
import sys

# google/flan-t5-small's body; its vocabulary is 32100 SentencePiece pieces, padded to 32128.
FLAN_T5_SMALL = dict(d_model=512, d_kv=64, d_ff=1024, num_layers=8, num_decoder_layers=8,
                     num_heads=6, feed_forward_proj="gated-gelu", tie_word_embeddings=False)
FLAN_T5_SMALL_VOCAB = 32128
# `--quick`: every bench's smoke-test shape (the figures then mean nothing).
TINY = dict(FLAN_T5_SMALL, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2,
            num_heads=4)


def configure_torch():
  """Returns the `torch` module set up for a fair peer: one thread per core, FTZ/DAZ on.

  Where PyTorch cannot flush denormals on this CPU, says so on stderr (the peer may then be slowed
  and the ratios flatter us) rather than refusing to run.
  """
  import torch

  torch.set_num_threads(os.cpu_count())
  if not torch.set_flush_denormal(True):
    print("WARNING: PyTorch cannot flush denormals on this CPU: the peer may run slower than it "
          "could, so ratios in our favour may be overstated", file=sys.stderr)
  return torch

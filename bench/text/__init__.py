"""The text pipeline both text families read: corpora, tokenizers, token shards, the
training-loop config blocks, and Contrastive Weight Tying's loss."""

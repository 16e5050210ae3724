"""The text pipeline both text families read: corpora, tokenizers, token shards, the
training-loop config blocks, and Contrastive Weight Tying's loss. A library two families
share, not a family.

May import: the ground floor, `bench.util`, `bench.training` and `bench.data`."""

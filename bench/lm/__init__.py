"""The language-model study family: causal decoders trained with a softmax head or with CWT."""

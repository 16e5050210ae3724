"""The language-model study family: causal decoders trained with a softmax head or with CWT.

May import: the ground floor, `bench.util`, `bench.training`, `bench.evals`, `bench.text` and
`bench.data`; never another family."""

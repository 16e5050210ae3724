"""The encoder study family: BERT masked-LM pretraining (softmax, CWT, CE+CWT, NCE) on GLUE.

May import: the ground floor, `bench.util`, `bench.training`, `bench.evals`, `bench.text` and
`bench.data`; never another family."""

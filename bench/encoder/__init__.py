"""The encoder study family: BERT masked-LM pretraining (softmax, CWT, CE+CWT, NCE) on GLUE."""

"""masked-LM pre-training: packing, masking, metrics, unigram baseline."""

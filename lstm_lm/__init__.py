"""lstm_lm: the Zaremba et al. (2014) LSTM language model on the Penn Treebank, in JAX."""

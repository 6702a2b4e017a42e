"""Building blocks of the model code: pure nn.Modules; parallelism and quantization live here."""

"""GPU kernels (Triton). Each has a plain-torch reference beside it for tests and CPU."""

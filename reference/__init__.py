"""PyTorch references that the Triton kernels are verified against."""

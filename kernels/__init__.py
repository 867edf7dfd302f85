"""Triton kernels of seqbench. On a machine without CUDA set TRITON_INTERPRET=1 before importing them."""

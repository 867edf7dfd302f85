"""Tools around the benchmark: compiling every kernel config for sm_80/sm_90a on a CPU (kernel_inspect)
and the lent-GPU job (gpu_suite)."""

"""``seqbench run``: the sweep (run), one point's measurement (point), the runners in this process or an
isolated worker (worker), the kernel checks (checks) and torchrun's shards (shards)."""

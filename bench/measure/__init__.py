"""How a point is measured: the timers and the spread rule (timing), NVML telemetry (nvml), the roofline
floor (roofline) and the environment recorded with every run (env)."""

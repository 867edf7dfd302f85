"""FlashAttention's test rule, shared by the kernel tests: against a float64 reference, the
kernel's error is at most twice the error of plain PyTorch in the same dtype, plus a floor of a
few rounding steps of the dtype (PyTorch's own error can be near zero by luck on tiny tensors)."""
import torch

# Rounding steps of the dtype allowed on top of the 2x rule, as a multiple of eps × max|reference|.
FLOOR_STEPS = {torch.float32: 2.0, torch.float16: 2.0, torch.bfloat16: 2.0}


def rounding_atol(ref: torch.Tensor, dtype: torch.dtype) -> float:
    return FLOOR_STEPS[dtype] * torch.finfo(dtype).eps * ref.abs().max().item() + 1e-6


def assert_within_2x(name: str, got: torch.Tensor, ref64: torch.Tensor, torch_same_dtype: torch.Tensor,
                     extra_atol: float = 0.0) -> None:
    """|got - ref64| <= 2 |torch - ref64| + floor, as max-norms; shapes and dtype checked too."""
    assert got.shape == ref64.shape, f"{name}: shape {tuple(got.shape)} != {tuple(ref64.shape)}"
    assert got.dtype == torch_same_dtype.dtype, f"{name}: dtype {got.dtype} != {torch_same_dtype.dtype}"
    err = (got.double() - ref64).abs().max().item()
    pt_err = (torch_same_dtype.double() - ref64).abs().max().item()
    bound = 2 * pt_err + rounding_atol(ref64, got.dtype) + extra_atol
    assert err <= bound, f"{name}: kernel error {err:.3g} > bound {bound:.3g} (torch's own error {pt_err:.3g})"

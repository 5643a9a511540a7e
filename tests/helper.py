"""Mathematical property checks shared by every linear-operator test (mrpro style).

Each check draws random complex inputs from a fixed seed and asserts an identity that holds for
any linear operator, so a test only has to name the operator and its shapes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

Op = Callable[[torch.Tensor], torch.Tensor]


def random_tensor(shape: Sequence[int], dtype: torch.dtype = torch.complex64, seed: int = 0) -> torch.Tensor:
    """A reproducible standard-normal tensor (complex or real)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(tuple(shape), generator=generator, dtype=dtype)


def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """<a, b> = sum conj(a) b, accumulated in double precision."""
    return torch.vdot(a.flatten().to(torch.complex128), b.flatten().to(torch.complex128))


def assert_adjoint(
    forward: Op, adjoint: Op, x_shape: Sequence[int], y_shape: Sequence[int],
    dtype: torch.dtype = torch.complex64, rtol: float = 1e-5,
) -> None:
    """<A x, y> == <x, A^H y> for random x and y."""
    x, y = random_tensor(x_shape, dtype, seed=1), random_tensor(y_shape, dtype, seed=2)
    left, right = dot(forward(x), y), dot(x, adjoint(y))
    scale = torch.linalg.vector_norm(forward(x).to(torch.complex128)) * torch.linalg.vector_norm(y.to(torch.complex128))
    assert abs(left - right) <= rtol * scale, f"<Ax, y> = {left} but <x, A^H y> = {right}"


def assert_linear(
    forward: Op, x_shape: Sequence[int], dtype: torch.dtype = torch.complex64, rtol: float = 1e-5
) -> None:
    """A(a x1 + b x2) == a A x1 + b A x2 for random x1, x2 and scalars a, b (complex if dtype is)."""
    x1, x2 = random_tensor(x_shape, dtype, seed=3), random_tensor(x_shape, dtype, seed=4)
    a, b = (torch.tensor(1.5 - 0.5j), torch.tensor(-0.3 + 2.0j)) if dtype.is_complex else (1.5, -0.3)
    combined = forward(a * x1 + b * x2)
    separate = a * forward(x1) + b * forward(x2)
    torch.testing.assert_close(combined, separate, rtol=rtol, atol=rtol * separate.abs().max().item())


def assert_normal(
    forward: Op, adjoint: Op, normal: Op, x_shape: Sequence[int],
    dtype: torch.dtype = torch.complex64, rtol: float = 1e-5,
) -> None:
    """normal(x) == adjoint(forward(x)) for a random x."""
    x = random_tensor(x_shape, dtype, seed=5)
    expected = adjoint(forward(x))
    torch.testing.assert_close(normal(x), expected, rtol=rtol, atol=rtol * expected.abs().max().item())

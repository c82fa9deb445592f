"""``advection_diffusion``: precipitation-like fields carried by a smooth random flow.

One sequence solves, on the frame grid, the advection-diffusion equation with growth

    d phi_k / dt + v . grad phi_k = kappa lap phi_k,        field = sum_k a_k(t) phi_k

for ``num_blobs`` elongated Gaussian blobs phi_k (random centre, width in
[``min_sigma``, ``max_sigma``], aspect ratio up to 2, random orientation). The velocity v is
steady and divergence-free: a uniform drift (random direction, speed up to ``drift``) plus a
swirl from a random stream function of three low-wavenumber Fourier modes (peak speed
``swirl``). Each blob grows and decays with its own envelope
``a_k(t) = A_k exp(-((t - t_k) / lifetime)^2)`` (peaks ``t_k`` spread over and around the
sequence). Frames are ``1 - exp(-field)``, so values lie in [0, 1).

Numerics, per frame: semi-Lagrangian advection (midpoint back-trajectory, bilinear
interpolation, zero inflow from outside the frame), then exact diffusion over one frame
(separable Gaussian heat kernel, mirrored at the edges: no flux).
Lengths are fractions of the frame side, speeds frame sides per frame, ``diffusion`` frame
sides squared per frame. Online when ``data.train_size == 0``; every sequence is a function
of (seed, split, index). About 4 ms per 64x64x20 sequence on the build machine (34 ms per
batch of 8).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from transmem.schema import ConfigError, DataConfig

from .base import DatasetSpec, SequenceDataset, requested_size

#: values below this are set to 0 (keeps float32 arithmetic out of the slow subnormal range)
_NEGLIGIBLE = 1e-7


@dataclass
class AdvectionDiffusionOptions:
    num_blobs: int = 5
    min_sigma: float = 0.04  # blob width, fraction of the frame side
    max_sigma: float = 0.12
    drift: float = 0.03  # largest uniform drift speed, frame sides per frame
    swirl: float = 0.02  # peak speed of the rotational part, frame sides per frame
    diffusion: float = 0.0002  # frame sides^2 per frame
    lifetime: float = 10.0  # frames: width of each blob's growth-decay envelope

    def validate(self, data: DataConfig) -> None:
        if self.num_blobs < 1:
            raise ConfigError(f"data.options.num_blobs: must be at least 1, got {self.num_blobs}")
        if not 0.0 < self.min_sigma <= self.max_sigma:
            raise ConfigError(
                f"data.options.min_sigma: need 0 < min_sigma <= max_sigma, got {self.min_sigma} and {self.max_sigma}"
            )
        for key in ("drift", "swirl", "diffusion"):
            if getattr(self, key) < 0:
                raise ConfigError(f"data.options.{key}: must be >= 0, got {getattr(self, key)}")
        if self.lifetime <= 0:
            raise ConfigError(f"data.options.lifetime: must be positive, got {self.lifetime}")
        if data.channels != 1:
            raise ConfigError(f"data.channels: advection_diffusion is one field, set channels = 1 (got {data.channels})")


def random_velocity(rng: np.random.Generator, options: AdvectionDiffusionOptions, size: int) -> np.ndarray:
    """Steady divergence-free velocity ``(2, size, size)`` (row, column) in pixels per frame."""
    grid = (np.arange(size) + 0.5) / size
    y, x = np.meshgrid(grid, grid, indexing="ij")
    angle = rng.uniform(0.0, 2.0 * np.pi)
    drift = rng.uniform(0.0, options.drift)
    velocity = np.empty((2, size, size))
    velocity[0] = drift * math.sin(angle)
    velocity[1] = drift * math.cos(angle)
    swirl = np.zeros((2, size, size))
    for _ in range(3):  # stream function psi = sum sin(ky y + kx x + phase); v = (-dpsi/dx, dpsi/dy)
        ky, kx = 2.0 * np.pi * rng.uniform(-1.5, 1.5, size=2)
        weight, phase = rng.uniform(0.5, 1.0), rng.uniform(0.0, 2.0 * np.pi)
        wave = weight * np.cos(ky * y + kx * x + phase)
        swirl[0] -= kx * wave
        swirl[1] += ky * wave
    peak = np.abs(swirl).max()
    if peak > 0:
        velocity += swirl * (options.swirl / peak)
    return velocity * size


class BilinearBacktrace:
    """Precomputed semi-Lagrangian step: ``step(fields)`` samples ``fields`` ``(B, S, S)``
    at the departure points of a one-frame back-trajectory (zero outside the frame)."""

    def __init__(self, velocity: np.ndarray):
        size = velocity.shape[-1]
        rows, cols = np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64), indexing="ij")
        half_r, half_c = self._sample(velocity, rows - 0.5 * velocity[0], cols - 0.5 * velocity[1])
        depart_r, depart_c = rows - half_r, cols - half_c  # midpoint rule
        r0, c0 = np.floor(depart_r), np.floor(depart_c)
        fr, fc = depart_r - r0, depart_c - c0
        self.size = size
        self.indices, self.weights = [], []
        for dr, dc, w in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc), (1, 0, fr * (1 - fc)), (1, 1, fr * fc)):
            r, c = r0 + dr, c0 + dc
            inside = (r >= 0) & (r < size) & (c >= 0) & (c < size)
            flat = (np.clip(r, 0, size - 1) * size + np.clip(c, 0, size - 1)).astype(np.int64).ravel()
            self.indices.append(flat)
            self.weights.append((w * inside).astype(np.float32).ravel())

    @staticmethod
    def _sample(velocity: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Velocity at fractional positions (nearest grid point, clamped to the frame)."""
        size = velocity.shape[-1]
        r = np.clip(np.rint(rows), 0, size - 1).astype(np.int64)
        c = np.clip(np.rint(cols), 0, size - 1).astype(np.int64)
        return velocity[0, r, c], velocity[1, r, c]

    def step(self, fields: np.ndarray) -> np.ndarray:
        flat = fields.reshape(len(fields), -1)
        out = np.take(flat, self.indices[0], axis=1) * self.weights[0]
        for index, weight in zip(self.indices[1:], self.weights[1:]):
            out += np.take(flat, index, axis=1) * weight
        return out.reshape(fields.shape)


def heat_kernel(size: int, amount: float) -> np.ndarray:
    """Matrix ``(size, size)`` of one-axis diffusion by ``amount`` pixels^2 (Gaussian of
    variance ``2 * amount``, reflected at the edges: no flux). Rows sum to 1."""
    centre = np.arange(size, dtype=np.float64)
    images = np.stack([centre, -1.0 - centre, 2.0 * size - 1.0 - centre])  # the source and its mirrors
    distance = centre[:, None, None] - images.T[None, :, :]  # (size, size, 3)
    kernel = np.exp(-(distance**2) / (4.0 * max(amount, 1e-12))).sum(axis=-1)
    kernel /= kernel.sum(axis=1, keepdims=True)
    kernel[kernel < _NEGLIGIBLE] = 0.0
    return kernel.astype(np.float32)


def initial_blobs(rng: np.random.Generator, options: AdvectionDiffusionOptions, size: int) -> np.ndarray:
    """Unit-peak elongated Gaussian blobs ``(B, size, size)`` float32."""
    count = options.num_blobs
    grid = (np.arange(size) + 0.5) / size
    centre = rng.uniform(0.1, 0.9, size=(count, 2))
    sigma = rng.uniform(options.min_sigma, options.max_sigma, size=count)
    aspect = rng.uniform(1.0, 2.0, size=count)
    theta = rng.uniform(0.0, np.pi, size=count)
    dy = grid[None, :, None] - centre[:, 0, None, None]
    dx = grid[None, None, :] - centre[:, 1, None, None]
    cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    along, across = cos * dx + sin * dy, -sin * dx + cos * dy
    s_along, s_across = (sigma * np.sqrt(aspect))[:, None, None], (sigma / np.sqrt(aspect))[:, None, None]
    blobs = np.exp(-0.5 * ((along / s_along) ** 2 + (across / s_across) ** 2)).astype(np.float32)
    blobs[blobs < _NEGLIGIBLE] = 0.0
    return blobs


class AdvectionDiffusion(SequenceDataset):
    def __init__(self, data: DataConfig, options: AdvectionDiffusionOptions, split: str):
        size = requested_size(data, split)
        super().__init__("advection_diffusion", data, options, split, size, online=(split == "train" and size == 0))

    def make_sequence(self, index: int) -> np.ndarray:
        options, steps, size = self.options, self.data.total_len, self.data.frame_size
        rng = self.rng(index)
        fields = initial_blobs(rng, options, size)
        advect = BilinearBacktrace(random_velocity(rng, options, size))
        peak_time = rng.uniform(-0.3 * steps, 1.3 * steps, size=options.num_blobs)
        peak_amount = rng.uniform(0.8, 2.5, size=options.num_blobs)
        envelope = peak_amount * np.exp(-(((np.arange(steps)[:, None] - peak_time) / options.lifetime) ** 2))
        envelope = envelope.astype(np.float32)  # (T, B)
        blur = heat_kernel(size, options.diffusion * size * size) if options.diffusion > 0 else None
        frames = np.empty((steps, size, size), dtype=np.float32)
        for t in range(steps):
            if t:
                fields = advect.step(fields)
                if blur is not None:
                    fields = blur @ fields @ blur.T
                fields[fields < _NEGLIGIBLE] = 0.0  # no subnormal floats: they are 100x slower
            total = np.tensordot(envelope[t], fields, axes=1)
            frames[t] = -np.expm1(-np.maximum(total, 0.0))
        return frames[:, None]


SPEC = DatasetSpec(
    options=AdvectionDiffusionOptions,
    build=AdvectionDiffusion,
    description="precipitation-like blobs advected by a smooth random flow, diffusing, growing and decaying",
)

"""``bouncing_balls``: discs with elastic collisions between themselves and with the walls.

Lengths are fractions of the frame side (so the same options look alike at any
``frame_size``); speeds are frame sides per frame. Each ball has a radius drawn from
[``min_radius``, ``max_radius``], mass proportional to its area, and a uniformly random
direction at a speed drawn from [``min_speed``, ``max_speed``]. Balls start without
overlap. The motion is integrated with ``substeps`` steps per frame; overlapping pairs that
approach each other exchange momentum along the line of centres (elastic: kinetic energy
and momentum conserved), walls reflect. Balls are rendered as soft discs (intensity 1
inside, a linear ramp ``edge`` wide across the rim) combined with ``max``.

Online when ``data.train_size == 0``; every sequence is a function of (seed, split, index).
About 2 ms per 64x64x20 sequence with 3 balls on the build machine (17 ms per batch of 8).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from transmem.schema import ConfigError, DataConfig

from .base import DatasetSpec, SequenceDataset, requested_size

#: placement attempts (per ball, then for the whole set) before giving up
_PLACEMENT_TRIES = 200


@dataclass
class BouncingBallsOptions:
    num_balls: int = 3
    min_radius: float = 0.06  # fraction of the frame side
    max_radius: float = 0.12  # fraction of the frame side
    min_speed: float = 0.03  # frame sides per frame
    max_speed: float = 0.06  # frame sides per frame
    edge: float = 0.025  # width of the soft rim, fraction of the frame side
    substeps: int = 4  # integration steps per frame

    def validate(self, data: DataConfig) -> None:
        if self.num_balls < 1:
            raise ConfigError(f"data.options.num_balls: must be at least 1, got {self.num_balls}")
        if not 0.0 < self.min_radius <= self.max_radius < 0.5:
            raise ConfigError(
                f"data.options.min_radius: need 0 < min_radius <= max_radius < 0.5, got {self.min_radius} and {self.max_radius}"
            )
        if self.num_balls * np.pi * self.max_radius**2 > 0.35:
            raise ConfigError(
                f"data.options.num_balls: {self.num_balls} balls of radius up to {self.max_radius} "
                f"cover more than 35% of the frame; use fewer or smaller balls"
            )
        if not 0.0 <= self.min_speed <= self.max_speed:
            raise ConfigError(
                f"data.options.min_speed: need 0 <= min_speed <= max_speed, got {self.min_speed} and {self.max_speed}"
            )
        if self.edge <= 0:
            raise ConfigError(f"data.options.edge: must be positive, got {self.edge}")
        if self.substeps < 1:
            raise ConfigError(f"data.options.substeps: must be at least 1, got {self.substeps}")
        if data.channels != 1:
            raise ConfigError(f"data.channels: bouncing_balls is grayscale, set channels = 1 (got {data.channels})")


def place_balls(rng: np.random.Generator, radii: np.ndarray) -> np.ndarray:
    """Non-overlapping centres ``(B, 2)`` inside the unit square for discs of ``radii``."""
    for _ in range(_PLACEMENT_TRIES):
        centres: list[np.ndarray] = []
        for radius in radii:
            for _ in range(_PLACEMENT_TRIES):
                candidate = rng.uniform(radius, 1.0 - radius, size=2)
                if all(np.hypot(*(candidate - c)) > radius + r for c, r in zip(centres, radii)):
                    centres.append(candidate)
                    break
            else:
                break
        if len(centres) == len(radii):
            return np.array(centres)
    raise RuntimeError(f"bouncing_balls: could not place {len(radii)} balls without overlap")


def simulate(position: np.ndarray, velocity: np.ndarray, radii: np.ndarray, frames: int, substeps: int) -> np.ndarray:
    """Centres ``(frames, B, 2)`` (unit-square coordinates) of elastic discs.

    ``position`` and ``velocity`` are ``(B, 2)`` (velocity in units per frame); frame 0 is
    the start. Mass is proportional to radius squared.
    """
    position, velocity = position.copy(), velocity.copy()
    mass = radii**2
    low, high = radii[:, None], 1.0 - radii[:, None]
    first, second = np.triu_indices(len(radii), k=1)
    out = np.empty((frames, len(radii), 2))
    out[0] = position
    dt = 1.0 / substeps
    for frame in range(1, frames):
        for _ in range(substeps):
            position += velocity * dt
            below, above = position < low, position > high
            position = np.where(below, 2 * low - position, np.where(above, 2 * high - position, position))
            velocity = np.where(below, np.abs(velocity), np.where(above, -np.abs(velocity), velocity))
            if len(first):
                collide_pairs(position, velocity, radii, mass, first, second)
        out[frame] = position
    return out


def collide_pairs(position, velocity, radii, mass, first, second) -> None:
    """Resolve, in place, every overlapping pair of discs that is approaching."""
    offset = position[second] - position[first]
    distance = np.hypot(offset[:, 0], offset[:, 1])
    closing = np.einsum("pk,pk->p", velocity[second] - velocity[first], offset) < 0
    for p in np.flatnonzero((distance < radii[first] + radii[second]) & closing & (distance > 0)):
        i, j = first[p], second[p]
        normal = offset[p] / distance[p]
        vi, vj = velocity[i] @ normal, velocity[j] @ normal
        total = mass[i] + mass[j]
        vi_new = (vi * (mass[i] - mass[j]) + 2 * mass[j] * vj) / total
        vj_new = (vj * (mass[j] - mass[i]) + 2 * mass[i] * vi) / total
        velocity[i] += (vi_new - vi) * normal
        velocity[j] += (vj_new - vj) * normal


def render_discs(centres: np.ndarray, radii: np.ndarray, size: int, edge: float) -> np.ndarray:
    """Soft discs: ``centres`` ``(T, B, 2)`` and ``radii`` ``(B,)`` in unit-square
    coordinates -> float32 frames ``(T, size, size)`` in [0, 1] (max over discs)."""
    grid = (np.arange(size, dtype=np.float32) + 0.5) / size
    dy = grid[None, None, :, None] - centres[:, :, 0, None, None].astype(np.float32)
    dx = grid[None, None, None, :] - centres[:, :, 1, None, None].astype(np.float32)
    distance = np.sqrt(dy * dy + dx * dx)  # (T, B, size, size)
    level = (radii[None, :, None, None].astype(np.float32) - distance) / np.float32(edge) + np.float32(0.5)
    return np.clip(level, 0.0, 1.0).max(axis=1)


class BouncingBalls(SequenceDataset):
    def __init__(self, data: DataConfig, options: BouncingBallsOptions, split: str):
        size = requested_size(data, split)
        super().__init__("bouncing_balls", data, options, split, size, online=(split == "train" and size == 0))

    def make_sequence(self, index: int) -> np.ndarray:
        options = self.options
        rng = self.rng(index)
        count = options.num_balls
        radii = rng.uniform(options.min_radius, options.max_radius, size=count)
        start = place_balls(rng, radii)
        angle = rng.uniform(0.0, 2.0 * np.pi, size=count)
        speed = rng.uniform(options.min_speed, options.max_speed, size=count)
        velocity = speed[:, None] * np.stack([np.sin(angle), np.cos(angle)], axis=1)
        centres = simulate(start, velocity, radii, self.data.total_len, options.substeps)
        return render_discs(centres, radii, self.data.frame_size, options.edge)[:, None]


SPEC = DatasetSpec(
    options=BouncingBallsOptions,
    build=BouncingBalls,
    description="soft discs with elastic collisions between themselves and the walls",
)

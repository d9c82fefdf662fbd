"""Appearance of a scene in one domain: palette, texture, illumination, optics and sensor.

The source domain imitates a game engine (clean shading, saturated colours, faint textures); the target
imitates a car camera (a different, duller palette, surface texture, an illumination gradient
and colour cast per frame, lens blur and sensor noise). Class colours move between domains but
stay distinct within each, so the shift is learnable from unlabeled target images.
"""
from dataclasses import dataclass

import cv2
import numpy as np

from .scene import (
    BUILDING,
    CAR,
    EGO_VEHICLE,
    PERSON,
    POLE,
    ROAD,
    SIDEWALK,
    SKY,
    TERRAIN,
    TRAFFIC_SIGN,
    VEGETATION,
)


@dataclass(frozen=True)
class Look:
    """How one domain turns labels into pixels."""

    palette: dict  # label id -> base RGB of the class
    jitter: float  # per-region colour jitter (std, 0..255) around the base colour
    object_saturation: tuple  # (low, high) HSV saturation of car/person colours, drawn per object
    object_value: tuple  # (low, high) HSV value of car/person colours
    sign_colours: tuple  # RGB colours traffic signs are drawn from
    texture: dict  # label id -> amplitude (0..255) of the class's surface texture
    windows: bool  # facade window grid (a texture with structure, not just noise)
    illumination: float  # strength of the per-frame illumination gradient (0 = none)
    colour_cast: float  # max per-channel gain deviation of the per-frame white balance
    exposure: tuple  # (low, high) per-frame global gain: time of day / camera exposure
    blur_sigma: tuple  # (low, high) Gaussian lens blur sigma in pixels (0 = none)
    noise_sigma: tuple  # (low, high) std of additive Gaussian sensor noise (0..255)


def _fractal_noise(rng, height, width, octaves=3):
    """Zero-mean texture in [-1, 1]: random grids upsampled and summed, coarse to fine."""
    out = np.zeros((height, width), np.float32)
    for o in range(octaves):
        cells = 2 ** (o + 2)
        grid = rng.uniform(-1, 1, (cells, max(2, cells * width // height))).astype(np.float32)
        out += cv2.resize(grid, (width, height), interpolation=cv2.INTER_LINEAR) / 2 ** o
    fine = rng.uniform(-1, 1, (height, width)).astype(np.float32)
    out += 0.5 * fine
    return out / np.abs(out).max()


def _object_colour(rng, look):
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(*look.object_saturation) * 255,
                      rng.uniform(*look.object_value) * 255]]], np.float32)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _region_colour(rng, look, label_id):
    if label_id in (CAR, PERSON):
        return _object_colour(rng, look)
    if label_id == TRAFFIC_SIGN:
        return np.asarray(look.sign_colours[rng.integers(len(look.sign_colours))], np.float32)
    base = np.asarray(look.palette.get(label_id, (0, 0, 0)), np.float32)
    return base + rng.normal(0, look.jitter, 3).astype(np.float32)


def _windows(rng, instances, region, horizon):
    """Dark window rectangles on a facade region: a regular grid at a random pitch."""
    ys, xs = np.nonzero(region)
    pitch_x, pitch_y = rng.integers(5, 9), rng.integers(6, 10)
    lit = ((xs // pitch_x) % 2 == 0) & ((ys // pitch_y) % 2 == 0) & (ys < horizon)
    out = np.zeros(instances.shape, np.float32)
    out[ys[lit], xs[lit]] = -1.0
    return out


def render(rng, scene, look):
    """Render a scene's pixels in one domain.

    Parameters
    ----------
    rng : numpy.random.Generator
        The only source of randomness.
    scene : Scene
        Labels and regions from ``draw_scene``.
    look : Look
        The domain's appearance.

    Returns
    -------
    numpy.ndarray
        uint8 (H, W, 3) RGB image.
    """
    height, width = scene.label_ids.shape
    img = np.zeros((height, width, 3), np.float32)
    texture = np.zeros((height, width), np.float32)
    for region_id in np.unique(scene.instances):
        region = scene.instances == region_id
        label_id = int(scene.label_ids[region][0])
        img[region] = _region_colour(rng, look, label_id)
        amplitude = look.texture.get(label_id, 0.0)
        if amplitude:
            texture[region] = amplitude * _fractal_noise(rng, height, width)[region]
        if look.windows and label_id == BUILDING:
            texture += 40.0 * _windows(rng, scene.instances, region, scene.horizon)
    img += texture[..., None]

    sky = scene.label_ids == SKY
    rows = np.linspace(-1, 1, height, dtype=np.float32)[:, None]
    img[sky] += (30.0 * rows * np.ones((1, width), np.float32))[sky][:, None]
    if look.illumination:
        cols = np.linspace(-1, 1, width, dtype=np.float32)[None, :]
        angle = rng.uniform(0, 2 * np.pi)
        light = 1.0 + look.illumination * (np.cos(angle) * cols + np.sin(angle) * rows)
        img *= light[..., None]
    if look.colour_cast:
        img *= rng.uniform(1 - look.colour_cast, 1 + look.colour_cast, 3).astype(np.float32)
    img *= np.float32(rng.uniform(*look.exposure))
    sigma = rng.uniform(*look.blur_sigma)
    if sigma > 0:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    noise = rng.uniform(*look.noise_sigma)
    if noise > 0:
        img += rng.normal(0, noise, img.shape).astype(np.float32)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


# "Game engine": saturated colours with clean, faint surface textures, cars/persons in any hue
# from grey to vivid (games have grey cars too), a time of day per frame, no camera effects
# (no blur, no sensor noise).
SOURCE_LOOK = Look(
    palette={ROAD: (75, 75, 85), SIDEWALK: (190, 140, 180), BUILDING: (190, 100, 70),
             VEGETATION: (50, 180, 50), TERRAIN: (170, 210, 90), SKY: (90, 170, 250),
             POLE: (170, 170, 185), EGO_VEHICLE: (0, 0, 0)},
    jitter=12.0, object_saturation=(0.0, 1.0), object_value=(0.2, 1.0),
    sign_colours=((230, 40, 40), (40, 70, 220), (240, 200, 30)),
    texture={ROAD: 6.0, SIDEWALK: 8.0, BUILDING: 5.0, VEGETATION: 15.0, TERRAIN: 10.0}, windows=True,
    illumination=0.0, colour_cast=0.0, exposure=(0.85, 1.15),
    blur_sigma=(0.0, 0.0), noise_sigma=(0.0, 0.0),
)

# "Car camera": overcast palette, textured surfaces, dull objects, per-frame light and cast.
TARGET_LOOK = Look(
    palette={ROAD: (110, 105, 100), SIDEWALK: (155, 145, 150), BUILDING: (150, 125, 110),
             VEGETATION: (80, 115, 55), TERRAIN: (135, 145, 85), SKY: (170, 195, 228),
             POLE: (95, 95, 105), EGO_VEHICLE: (35, 35, 40)},
    jitter=18.0, object_saturation=(0.0, 0.6), object_value=(0.15, 0.85),
    sign_colours=((200, 45, 45), (45, 85, 170), (215, 195, 70), (150, 150, 150)),
    texture={ROAD: 18.0, SIDEWALK: 22.0, BUILDING: 15.0, VEGETATION: 40.0, TERRAIN: 30.0},
    windows=True, illumination=0.25, colour_cast=0.06, exposure=(0.8, 1.1),
    blur_sigma=(0.3, 0.9), noise_sigma=(2.0, 6.0),
)

"""Street-scene layout: a label map (Cityscapes label ids) and an instance map, in perspective.

The camera looks down a straight street. Everything on the ground plane is bounded by lines
through the vanishing point (road, sidewalks, facade bases), so an object standing at image row
``y`` has an apparent size proportional to ``y - horizon`` (its depth cue). Objects are drawn
far to near, so nearer ones occlude farther ones as in a real frame.
"""
from dataclasses import dataclass

import cv2
import numpy as np

# Cityscapes label ids (cityscapesscripts); the generator draws these directly so that the
# files it writes hold exactly what the real datasets hold.
UNLABELED, EGO_VEHICLE = 0, 1
ROAD, SIDEWALK, BUILDING, POLE, TRAFFIC_SIGN = 7, 8, 11, 17, 20
VEGETATION, TERRAIN, SKY, PERSON, CAR = 21, 22, 23, 24, 26


@dataclass(frozen=True)
class Layout:
    """Geometry and object frequencies of one domain's camera and streets."""

    horizon: tuple  # (low, high) horizon row as a fraction of H; camera height/pitch proxy
    road_half_width: tuple  # (low, high) road half-width at the bottom row, fraction of W
    sidewalk_width: tuple  # (low, high) sidewalk width at the bottom row, fraction of W
    building_height: tuple  # (low, high) facade height as a multiple of the camera height
    cars: float  # mean number of cars (Poisson)
    persons: float  # mean number of persons (Poisson)
    poles: float  # mean number of poles, about half of them carrying a sign (Poisson)
    trees: float  # mean number of street trees (Poisson)
    terrain_strip: float  # probability of a grass strip between road and sidewalk
    ego_hood: bool  # draw the recording car's bonnet at the bottom (void, as in Cityscapes)


@dataclass
class Scene:
    """One frame's labels: ``label_ids`` uint8 (H, W) Cityscapes label ids, ``instances``
    int32 (H, W) region ids (each building block, car, person... has its own), and the
    horizon row."""

    label_ids: np.ndarray
    instances: np.ndarray
    horizon: int


class _Canvas:
    """Label and instance maps that shapes are painted into, one region id per shape."""

    def __init__(self, height, width):
        self.label_ids = np.full((height, width), UNLABELED, np.uint8)
        self.instances = np.zeros((height, width), np.int32)
        self._next_id = 1

    def blank(self):
        """A fresh uint8 mask to draw one shape into (1 = inside)."""
        return np.zeros(self.label_ids.shape, np.uint8)

    def add(self, label_id, mask):
        """Paint a shape's mask over what is there, as a new region."""
        sel = mask > 0
        self.label_ids[sel] = label_id
        self.instances[sel] = self._next_id
        self._next_id += 1


def _poly(points):
    return [np.round(np.asarray(points, np.float64)).astype(np.int32)]


def _ground_x(vx, horizon, x_bottom, height, y):
    """x of the ground line through the vanishing point and (x_bottom, height) at row y."""
    return vx + (x_bottom - vx) * (y - horizon) / float(height - horizon)


def _draw_facades(canvas, rng, layout, vx, horizon, outer_left, outer_right, height, width):
    """Building blocks (and gaps with trees) along both sides, stepping their rooflines."""
    for side, x_outer in ((-1, outer_left), (1, outer_right)):
        # Ground line where the facades stand, extended to the image border.
        x_edge = 0.0 if side < 0 else float(width - 1)
        slope = (height - horizon) / max(abs(x_outer - vx), 1.0)
        y_edge = horizon + slope * abs(x_edge - vx)
        xs = [vx]
        while abs(xs[-1] - x_edge) > 1:
            step = rng.uniform(0.08, 0.3) * width
            xs.append(float(np.clip(xs[-1] + side * step, min(vx, x_edge), max(vx, x_edge))))
        for x0, x1 in zip(xs[:-1], xs[1:]):
            k = rng.uniform(*layout.building_height)
            base = [horizon + (y_edge - horizon) * abs(x - vx) / max(abs(x_edge - vx), 1.0) for x in (x0, x1)]
            top = [horizon - k * (b - horizon) for b in base]
            quad = _poly([(x0, base[0]), (x1, base[1]), (x1, top[1]), (x0, top[0])])
            label = VEGETATION if rng.random() < 0.15 else BUILDING
            canvas.add(label, cv2.fillPoly(canvas.blank(), quad, 1))


def _sidewalk_point(rng, vx, horizon, height, road_edges, outer_edges, far=0.0, near=1.2):
    """A random ground point on a sidewalk: (x, y_base, scale) with scale = y_base - horizon.

    ``far`` and ``near`` bound y_base - horizon as fractions of height - horizon (> 1: the
    object's foot is below the frame)."""
    depth = height - horizon
    y = rng.uniform(horizon + max(3.0, far * depth), horizon + near * depth)
    side = rng.integers(2)
    x_in = _ground_x(vx, horizon, road_edges[side], height, y)
    x_out = _ground_x(vx, horizon, outer_edges[side], height, y)
    return rng.uniform(min(x_in, x_out), max(x_in, x_out)), y, y - horizon


def _draw_person(mask, x, y, scale, rng):
    body_h = 1.1 * scale
    w = max(1.0, 0.32 * body_h)
    head_r = max(1, int(round(0.11 * body_h)))
    cv2.circle(mask, (int(round(x)), int(round(y - body_h + head_r))), head_r, 1, -1)
    cv2.fillPoly(mask, _poly([(x - w / 2, y - 0.85 * body_h), (x + w / 2, y - 0.85 * body_h),
                              (x + w / 2.5, y - 0.45 * body_h), (x - w / 2.5, y - 0.45 * body_h)]), 1)
    stride = rng.uniform(0.05, 0.2) * body_h
    for dx in (-stride, stride):
        cv2.line(mask, (int(round(x)), int(round(y - 0.47 * body_h))), (int(round(x + dx)), int(round(y))), 1,
                 max(1, int(round(0.12 * body_h))))


def _draw_car(mask, x, y, scale, rng):
    car_h = rng.uniform(0.75, 1.0) * scale
    car_w = rng.uniform(1.4, 1.9) * car_h
    cv2.fillPoly(mask, _poly([(x - car_w / 2, y - 0.05 * car_h), (x + car_w / 2, y - 0.05 * car_h),
                              (x + car_w / 2, y - 0.55 * car_h), (x - car_w / 2, y - 0.55 * car_h)]), 1)
    cv2.fillPoly(mask, _poly([(x - 0.35 * car_w, y - 0.55 * car_h), (x + 0.35 * car_w, y - 0.55 * car_h),
                              (x + 0.25 * car_w, y - car_h), (x - 0.25 * car_w, y - car_h)]), 1)
    wheel = max(1, int(round(0.14 * car_h)))
    for dx in (-0.32 * car_w, 0.32 * car_w):
        cv2.circle(mask, (int(round(x + dx)), int(round(y - wheel))), wheel, 1, -1)


def _draw_standing(canvas, rng, kind, x, y, scale):
    """A tree, pole (maybe with a sign), person or car whose foot is at (x, y)."""
    foot = (int(x), int(y))
    if kind == "tree":
        top = int(y - 2.2 * scale)
        trunk = max(1, int(round(0.06 * scale)))
        canvas.add(VEGETATION, cv2.line(canvas.blank(), foot, (int(x), top), 1, trunk))
        axes = (max(2, int(0.7 * scale)), max(2, int(0.9 * scale)))
        canvas.add(VEGETATION, cv2.ellipse(canvas.blank(), (int(x), top), axes, 0, 0, 360, 1, -1))
    elif kind == "pole":
        top = int(y - rng.uniform(1.6, 2.4) * scale)
        canvas.add(POLE, cv2.line(canvas.blank(), foot, (int(x), top), 1, max(1, int(round(0.08 * scale)))))
        if rng.random() < 0.6:
            r = max(2, int(round(0.22 * scale)))
            if rng.random() < 0.5:
                sign = cv2.circle(canvas.blank(), (int(x), top + r), r, 1, -1)
            else:
                corners = (int(x) - r, top), (int(x) + r, top + int(1.4 * r))
                sign = cv2.rectangle(canvas.blank(), *corners, 1, -1)
            canvas.add(TRAFFIC_SIGN, sign)
    elif kind == "person":
        mask = canvas.blank()
        _draw_person(mask, x, y, scale, rng)
        canvas.add(PERSON, mask)
    else:
        mask = canvas.blank()
        _draw_car(mask, x, y, scale, rng)
        canvas.add(CAR, mask)


def draw_scene(rng, layout, height, width):
    """Draw one street scene.

    Parameters
    ----------
    rng : numpy.random.Generator
        The only source of randomness: the same generator state gives the same scene.
    layout : Layout
        The domain's camera geometry and object frequencies.
    height, width : int
        Frame size in pixels.

    Returns
    -------
    Scene
    """
    canvas = _Canvas(height, width)
    horizon = rng.uniform(*layout.horizon) * height
    vx = rng.uniform(0.4, 0.6) * width
    canvas.add(SKY, np.ones_like(canvas.blank()))

    half = rng.uniform(*layout.road_half_width) * width
    road_edges = (vx - half, vx + half)
    walks = [rng.uniform(*layout.sidewalk_width) * width for _ in range(2)]
    outer_edges = (road_edges[0] - walks[0], road_edges[1] + walks[1])
    _draw_facades(canvas, rng, layout, vx, horizon, *outer_edges, height, width)
    ground_y = height + 2 * (height - horizon)  # far below the frame: the lines stay straight

    def ground_band(x_a, x_b):
        xs = [_ground_x(vx, horizon, x, height, ground_y) for x in (x_a, x_b)]
        triangle = _poly([(vx, int(horizon)), (xs[0], ground_y), (xs[1], ground_y)])
        return cv2.fillPoly(canvas.blank(), triangle, 1)

    canvas.add(SIDEWALK, ground_band(*outer_edges))
    canvas.add(ROAD, ground_band(*road_edges))
    if rng.random() < layout.terrain_strip:
        strip = 0.25 * min(walks)
        canvas.add(TERRAIN, ground_band(road_edges[0] - strip, road_edges[0]))
        canvas.add(TERRAIN, ground_band(road_edges[1], road_edges[1] + strip))

    # Standing objects, far to near so that near ones occlude.
    objects = []
    for kind, mean, far, near in (("tree", layout.trees, 0.0, 1.2), ("pole", layout.poles, 0.0, 1.2),
                                  ("person", layout.persons, 0.05, 0.75)):
        for _ in range(rng.poisson(mean)):
            point = _sidewalk_point(rng, vx, horizon, height, road_edges, outer_edges, far, near)
            objects.append((kind,) + point)
    for _ in range(rng.poisson(layout.cars)):
        y = rng.uniform(horizon + 0.06 * (height - horizon), horizon + 0.7 * (height - horizon))
        x = _ground_x(vx, horizon, vx + rng.uniform(-0.85, 0.85) * half, height, y)
        objects.append(("car", x, y, y - horizon))
    for kind, x, y, scale in sorted(objects, key=lambda o: o[2]):
        _draw_standing(canvas, rng, kind, x, y, scale)

    if layout.ego_hood:
        hood_h = rng.uniform(0.07, 0.1) * height
        center = (int(width / 2), int(height + 0.6 * hood_h))
        axes = (int(0.7 * width), int(1.6 * hood_h))
        canvas.add(EGO_VEHICLE, cv2.ellipse(canvas.blank(), center, axes, 0, 180, 360, 1, -1))
    return Scene(canvas.label_ids, canvas.instances, int(round(horizon)))

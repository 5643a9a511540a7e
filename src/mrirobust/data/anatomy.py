"""Smooth anatomical shape priors of the synthetic families: tissue layers of a knee and a brain.

Each function draws one patient's geometry from the canvas's generator (zoom, tilt, position,
bone and head sizes) and returns the tissue layers to composite in order, plus the body mask
(where dead leaves may fall). The slice position `t` in the organ (coronal knee: anterior -1 to
posterior +1; axial brain: skull base -1 to vertex +1) changes the anatomy strongly: bones and
ventricles appear and vanish, condyles separate, the head shrinks towards the vertex.
"""

from __future__ import annotations

import math

import torch

from mrirobust.data.phantoms import Canvas, Layers, ellipse, smoothstep


def _frame(c: Canvas, zoom: tuple[float, float], shift: float, tilt: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Patient coordinates: zoomed (the anatomy's size in the field of view), shifted, tilted."""
    scale = c.uniform(*zoom)
    cy, cx = c.uniform(-shift, shift), c.uniform(-shift, shift)
    angle = c.uniform(-tilt, tilt)
    y, x = (c.y - cy) / scale, (c.x - cx) / scale
    return y * math.cos(angle) + x * math.sin(angle), x * math.cos(angle) - y * math.sin(angle)


def knee(c: Canvas) -> tuple[Layers, torch.Tensor]:
    """Tissue layers of a coronal knee and its body mask."""
    t = c.t
    y, x = _frame(c, (0.65, 1.25), 0.1, 0.12)
    side = 1.0 if c.uniform(0, 1) < 0.5 else -1.0  # which side the fibula is on (left/right knee)
    joint = c.uniform(-0.12, 0.15)
    cart = c.uniform(0.015, 0.03)  # cartilage thickness
    femur_end, tibia_top = joint - cart - 0.006, joint + cart + 0.006
    low = c.field(0, 3)
    # Bones shrink and vanish towards the anterior and posterior ends of the knee.
    extent = torch.sqrt((1 - ((t - c.uniform(-0.1, 0.15)) / c.uniform(0.8, 1.0)) ** 2).clamp_min(0))
    shrink = 0.35 * (1 - extent)

    leg = c.uniform(0.55, 0.78) - c.uniform(0.0, 0.1) * y + 0.03 * low - x.abs() - 0.08 * t.abs() ** 2
    fat_depth = c.uniform(0.03, 0.14) * (1 + 0.5 * c.field(0, 2).clamp(-1, 1))
    muscle = c.soft(leg - fat_depth)

    # Femur: shaft widening into two condyles that separate towards posterior slices.
    spread = c.uniform(0.16, 0.24) + 0.06 * t
    ry, rx = c.uniform(0.12, 0.19), c.uniform(0.14, 0.21)
    width = c.uniform(0.16, 0.24) + 0.25 * smoothstep((y - (femur_end - 0.6)) / 0.45)
    shaft = torch.minimum(width - x.abs(), femur_end - ry - y + 0.05)
    condyles = torch.maximum(ellipse(y, x, femur_end - ry, -spread, ry, rx),
                             ellipse(y, x, femur_end - ry, spread, ry, rx))
    notch = ellipse(y, x, femur_end, 0.0, 0.04 + 0.14 * (0.4 + t).clamp(0, 1), c.uniform(0.05, 0.09))
    femur = torch.minimum(torch.maximum(shaft, condyles), -notch) - shrink

    # Tibia: plateau with the tibial spines, narrowing to the shaft; fibula head posteriorly.
    spines = 0.035 * (torch.exp(-((x - 0.03) / 0.03) ** 2) + torch.exp(-((x + 0.04) / 0.03) ** 2))
    plateau = y - tibia_top + spines - c.uniform(0.0, 0.03) * (x / 0.4) ** 2
    tibia = torch.minimum(plateau, c.uniform(0.18, 0.25) + 0.25 * (1 - smoothstep((y - tibia_top) / 0.35))
                          - x.abs()) - shrink
    fibula = ellipse(y, x, tibia_top + c.uniform(0.18, 0.3), side * 0.43, 0.09, 0.055) \
        - 0.3 * (1 - ((t - 0.1) * 3).clamp(0, 1))
    patella = ellipse(y, x, femur_end - c.uniform(0.25, 0.4), 0.0, 0.14, 0.2) - 0.4 * (t + 0.55).clamp_min(0)
    bones = torch.maximum(torch.maximum(femur, tibia), torch.maximum(fibula, patella))

    # Soft tissue around the joint: fluid, fat pad and ligament in the notch, menisci.
    fluid = c.soft(torch.minimum(c.uniform(0.35, 0.5) - x.abs(),
                                 torch.minimum(y - femur_end + c.uniform(0.05, 0.2), tibia_top + 0.05 - y)))
    ligament = c.soft(0.022 - ((y - joint + 0.08) * math.cos(1.0) - x * math.sin(1.0)).abs()) \
        * c.soft(notch + 0.02) * (1 - (t.abs() / 0.5)).clamp(0, 1)
    s = x.abs() - 0.27
    meniscus = c.soft(torch.minimum(0.01 + 0.05 * (s / 0.17).clamp(0, 1) - (y - joint).abs(),
                                    torch.minimum(s, 0.2 - s))) * extent
    cartilage = c.soft(torch.maximum(
        torch.minimum(femur + cart, y - (femur_end - 0.22)), torch.minimum(tibia + cart, tibia_top + 0.05 - y)))
    cortex = c.uniform(0.008, 0.025)
    marrow = c.soft(bones - cortex)
    inside = c.soft(leg)
    layers = [("fat", inside), ("muscle", muscle), ("fluid", 0.7 * fluid * inside), ("fat", c.soft(notch) * inside),
              ("fibrous", ligament), ("fibrous", meniscus * inside), ("cartilage", cartilage * inside),
              ("fibrous", c.soft(bones)), ("marrow", marrow)]
    return layers, inside


def brain(c: Canvas) -> tuple[Layers, torch.Tensor]:
    """Tissue layers of an axial brain slice and its body mask."""
    t = c.t
    y, x = _frame(c, (0.8, 1.15), 0.06, 0.12)
    size = torch.sqrt((1 - (t / 1.15) ** 2).clamp_min(0.04))
    ay, ax = c.uniform(0.76, 0.9) * size, c.uniform(0.6, 0.74) * size
    head = ellipse(y, x, 0.0, 0.0, ay, ax) + 0.015 * c.field(0, 3, symmetric=0.8)
    scalp, skull = c.uniform(0.02, 0.05), c.uniform(0.03, 0.06)
    brain = head - scalp - skull - 0.02  # depth below the brain surface

    folds = c.field(c.uniform(7, 12), 3, symmetric=0.8, drift=0.5)
    sulci = c.soft((c.uniform(0.15, 0.3) - folds.abs()) * 0.08) * c.soft(0.1 + 0.03 * c.field(0, 4) - brain)
    cortex = c.uniform(0.1, 0.16)
    white = torch.maximum(brain - cortex, torch.minimum(brain - 0.035, (folds.abs() - 0.75) * 0.1))
    centre = c.uniform(-0.2, 0.2)
    middle = (1 - ((t - centre) / 0.6) ** 2).clamp(0, 1)  # ventricles and nuclei live in central slices
    vy, vx, vl = c.uniform(-0.12, 0.0), c.uniform(0.04, 0.1), c.uniform(0.15, 0.28)
    ventricles = torch.maximum(ellipse(y, x, vy, -vx, vl, 0.05, angle=0.12),
                               ellipse(y, x, vy, vx, vl, 0.05, angle=-0.12)) - 0.1 * (1 - middle)
    nuclei = torch.maximum(ellipse(y, x, 0.05, -0.18, 0.13, 0.06), ellipse(y, x, 0.05, 0.18, 0.13, 0.06)) \
        - 0.1 * (1 - middle)
    fissure = c.soft(0.008 - x.abs()) * c.soft((y / ay).abs() - 0.4)
    inside = c.soft(brain)
    layers = [("fat", c.soft(head)), ("fibrous", c.soft(head - scalp)), ("csf", c.soft(head - scalp - skull)),
              ("gm", inside), ("csf", sulci * inside), ("wm", c.soft(white)), ("gm", c.soft(nuclei)),
              ("csf", c.soft(ventricles)), ("csf", fissure * inside)]
    return layers, inside

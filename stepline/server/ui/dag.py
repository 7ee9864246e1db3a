"""Where each step of a run is drawn: a layered left-to-right layout of the DAG.

A step's layer is one more than its deepest parent's. Steps of a layer that share the same
parents and the same children (a fan-out: one step mapped over many inputs) are drawn as one
*group* box once there are ``GROUP_MIN`` of them; a layer that still holds more than
``LAYER_MAX`` boxes keeps its first ones and folds the rest into one group. A 1,000-step
fan-out is then three boxes, not a 40,000-pixel column. Within a layer, boxes are ordered by
the mean position of their parents (a few barycenter sweeps), which removes most crossings of
the graphs pipelines have. Pure: no store, no HTML.
"""

from __future__ import annotations

import dataclasses
import hashlib

from stepline.pipeline.views import dag_order

#: siblings (same parents, same children, same layer) drawn as one box from this many on
GROUP_MIN = 8
#: boxes in one layer beyond which the rest are folded into one group
LAYER_MAX = 40
NODE_W = 200
NODE_H = 48
GROUP_H = 64
GAP_X = 72
GAP_Y = 14
PAD = 16


@dataclasses.dataclass
class Box:
    id: str  #: the step's name, or "group:..." for a group
    label: str
    members: list[str]  #: the steps drawn in this box
    layer: int
    x: float = 0.0
    y: float = 0.0
    w: float = NODE_W
    h: float = NODE_H

    @property
    def group(self) -> bool:
        return self.id.startswith("group:")


@dataclasses.dataclass
class Edge:
    src: str
    dst: str
    path: str  #: SVG path data


@dataclasses.dataclass
class Layout:
    boxes: list[Box]
    edges: list[Edge]
    width: float
    height: float

    def groups(self) -> dict[str, list[str]]:
        return {b.id: b.members for b in self.boxes if b.group}


def layers(parents: dict[str, list[str]]) -> dict[str, int]:
    """The layer of each step: 0 without parents, else one more than its deepest parent."""
    layer: dict[str, int] = {}
    for name in dag_order(parents):
        known = [layer[p] for p in parents[name] if p in layer]
        layer[name] = 1 + max(known) if known else 0
    return layer


def group_label(names: list[str]) -> str:
    """A short name for a group of steps: their common prefix (``train_*``) or the first
    and last names."""
    first, last = min(names), max(names)
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    prefix = first[:n].rstrip("0123456789")
    if len(prefix) >= 2:
        return f"{prefix}*"
    return f"{first} … {last}"


def _group_id(layer: int, members: list[str]) -> str:
    digest = hashlib.sha1("\x00".join(members).encode()).hexdigest()[:10]
    return f"group:{layer}:{digest}"


def layout(
    parents: dict[str, list[str]], *, group_min: int = GROUP_MIN, layer_max: int = LAYER_MAX
) -> Layout:
    order = dag_order(parents)
    layer = layers(parents)
    children: dict[str, list[str]] = {n: [] for n in order}
    for n in order:
        for p in parents[n]:
            if p in children:
                children[p].append(n)
    # -- boxes: single steps, or groups of alike siblings
    by_layer: dict[int, list[str]] = {}
    for n in order:
        by_layer.setdefault(layer[n], []).append(n)
    boxes_by_layer: dict[int, list[Box]] = {}
    box_of: dict[str, str] = {}
    for lay, names in sorted(by_layer.items()):
        alike: dict[tuple[tuple[str, ...], tuple[str, ...]], list[str]] = {}
        for n in names:
            key = (tuple(sorted(parents[n])), tuple(sorted(children[n])))
            alike.setdefault(key, []).append(n)
        out: list[Box] = []
        placed: set[str] = set()
        for n in names:  # in the order the steps were added
            if n in placed:
                continue
            key = (tuple(sorted(parents[n])), tuple(sorted(children[n])))
            members = alike[key]
            if len(members) >= group_min:
                out.append(Box(_group_id(lay, members), group_label(members), members, lay))
                placed.update(members)
            else:
                out.append(Box(n, n, [n], lay))
                placed.add(n)
        if len(out) > layer_max:
            keep, rest = out[: layer_max - 1], out[layer_max - 1 :]
            members = [m for b in rest for m in b.members]
            out = [*keep, Box(_group_id(lay, members), f"{len(members)} more", members, lay)]
        for b in out:
            if b.group:
                b.h = GROUP_H
            for m in b.members:
                box_of[m] = b.id
        boxes_by_layer[lay] = out
    # -- edges between boxes
    pairs: dict[tuple[str, str], None] = {}
    for n in order:
        for p in parents[n]:
            if p in box_of and box_of[p] != box_of[n]:
                pairs[(box_of[p], box_of[n])] = None
    box_parents: dict[str, list[str]] = {}
    for src, dst in pairs:
        box_parents.setdefault(dst, []).append(src)
    box_children: dict[str, list[str]] = {}
    for src, dst in pairs:
        box_children.setdefault(src, []).append(dst)
    # -- order within layers: barycenter sweeps, down then up
    pos: dict[str, float] = {}
    for boxes in boxes_by_layer.values():
        for i, b in enumerate(boxes):
            pos[b.id] = float(i)
    lays = sorted(boxes_by_layer)

    def sweep(seq: list[int], links: dict[str, list[str]]) -> None:
        for lay in seq:
            boxes = boxes_by_layer[lay]

            def center(b: Box) -> float:
                near = [pos[o] for o in links.get(b.id, ()) if o in pos]
                return sum(near) / len(near) if near else pos[b.id]

            boxes.sort(key=lambda b: (center(b), pos[b.id]))
            for i, b in enumerate(boxes):
                pos[b.id] = float(i)

    for _ in range(2):
        sweep(lays[1:], box_parents)
        sweep(list(reversed(lays[:-1])), box_children)
    sweep(lays[1:], box_parents)
    # -- coordinates: columns left to right, each column centred on the tallest
    heights = {
        lay: sum(b.h for b in boxes) + GAP_Y * (len(boxes) - 1)
        for lay, boxes in boxes_by_layer.items()
    }
    tallest = max(heights.values(), default=0.0)
    where: dict[str, Box] = {}
    for lay, boxes in boxes_by_layer.items():
        y = PAD + (tallest - heights[lay]) / 2
        for b in boxes:
            b.x = PAD + lay * (NODE_W + GAP_X)
            b.y = y
            y += b.h + GAP_Y
            where[b.id] = b
    edges = []
    for src, dst in pairs:
        a, b = where[src], where[dst]
        x1, y1 = a.x + a.w, a.y + a.h / 2
        x2, y2 = b.x, b.y + b.h / 2
        bend = max(GAP_X / 2, (x2 - x1) / 3)
        path = (
            f"M{x1:.0f},{y1:.0f} C{x1 + bend:.0f},{y1:.0f} "
            f"{x2 - bend:.0f},{y2:.0f} {x2:.0f},{y2:.0f}"
        )
        edges.append(Edge(src, dst, path))
    all_boxes = [b for lay in lays for b in boxes_by_layer[lay]]
    width = PAD * 2 + (len(lays) * (NODE_W + GAP_X) - GAP_X if lays else 0)
    return Layout(all_boxes, edges, float(width), float(PAD * 2 + tallest))

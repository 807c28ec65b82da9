"""The data map: datastores -> purposes -> recipients (with their countries), from the
compiled policy, as an inline SVG laid out in three columns (no script, no library).

A datastore links to a purpose when the purpose may use a category one of its collections
holds (``CompiledPolicy.purpose_covers``); a purpose links to the recipients the policy
names for it (``recipients_by_purpose``). Rows are ordered by the barycentre heuristic
(each node placed at the mean position of its neighbours, two sweeps), which removes most
crossings of a layered graph at no cost worth measuring. The same facts follow as a table,
for screen readers and for copying.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from fastapi import APIRouter, Request
from fastapi.responses import Response

from fiduciary.policy.compile import CompiledPolicy
from fiduciary.policy.render import country_name
from fiduciary.web.console.base import gate, page, words

router = APIRouter()

COL_W: Final = 280
GAP: Final = 90
NODE_H: Final = 46
ROW_GAP: Final = 12
MARGIN: Final = 16
HEAD: Final = 36  # the column titles
# Characters that fit in a node (bold 14px, and 12px for the second line); a longer text
# is cut with an ellipsis, and the node's <title> (a tooltip) has it whole.
MAX_LABEL: Final = 29
MAX_SUB: Final = 40
COLUMN_TITLES: Final = ("Datastores", "Purposes", "Recipients")


@dataclass(frozen=True)
class Node:
    key: str
    kind: str  # datastore | purpose | recipient
    label: str
    sub: str
    flag: bool = False  # a recipient outside the EEA without an adequacy decision


@dataclass(frozen=True)
class Placed:
    node: Node
    x: int
    y: int

    @property
    def short(self) -> str:
        return _cut(self.node.label, MAX_LABEL)

    @property
    def short_sub(self) -> str:
        return _cut(self.node.sub, MAX_SUB)


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"


@dataclass(frozen=True)
class DataMap:
    columns: tuple[list[Node], list[Node], list[Node]]
    edges: list[tuple[str, str]]  # (from key, to key), keys prefixed by kind


def build(cp: CompiledPolicy) -> DataMap:
    """The graph: nodes per column and the edges between neighbouring columns."""
    stores: dict[str, set[str]] = {}
    collections: dict[str, int] = {}
    for info in cp.collections.values():
        stores.setdefault(info.datastore, set()).update(info.categories)
        collections[info.datastore] = collections.get(info.datastore, 0) + 1
    ds_nodes = [
        Node(
            f"d:{k}",
            "datastore",
            k,
            f"{collections[k]} collection{'s' if collections[k] != 1 else ''} · "
            f"{len(cats)} categor{'ies' if len(cats) != 1 else 'y'}",
        )
        for k, cats in stores.items()
    ]
    p_nodes = [Node(f"p:{k}", "purpose", p.name, words(p.basis.value)) for k, p in cp.purposes.items()]
    r_nodes = []
    for k, r in cp.recipients.items():
        src = r.source
        where = country_name(src.country).removeprefix("the ") if src.country else "country not stated"
        r_nodes.append(
            Node(
                f"r:{k}",
                "recipient",
                src.name,
                f"{words(src.role.value)} · {where}" + (" · outside EEA" if r.outside_eea else ""),
                flag=r.outside_eea,
            )
        )
    edges: list[tuple[str, str]] = []
    for ds, cats in stores.items():
        for pk in cp.purposes:
            if any(cp.purpose_covers(pk, c) for c in cats):
                edges.append((f"d:{ds}", f"p:{pk}"))
    for pk, recipients in cp.recipients_by_purpose.items():
        if pk in cp.purposes:
            edges.extend((f"p:{pk}", f"r:{rk}") for rk in sorted(recipients))
    return DataMap((ds_nodes, p_nodes, r_nodes), edges)


def _order(nodes: list[Node], fixed: Sequence[Node], links: Mapping[str, list[str]]) -> list[Node]:
    """``nodes`` sorted by the mean row of their neighbours in ``fixed``; those without one
    last, by name."""
    row = {n.key: i for i, n in enumerate(fixed)}

    def score(n: Node) -> tuple[int, float, str]:
        rows = [row[k] for k in links.get(n.key, ()) if k in row]
        return (0, sum(rows) / len(rows), n.label.lower()) if rows else (1, 0.0, n.label.lower())

    return sorted(nodes, key=score)


def layout(m: DataMap) -> tuple[list[Placed], list[str], int, int]:
    """Placed nodes, edge paths (SVG ``d``), width and height."""
    links: dict[str, list[str]] = {}
    for a, b in m.edges:
        links.setdefault(a, []).append(b)
        links.setdefault(b, []).append(a)
    ds, ps, rs = (sorted(c, key=lambda n: n.label.lower()) for c in m.columns)
    for _ in range(2):
        ps = _order(ps, ds, links)
        rs = _order(rs, ps, links)
        ds = _order(ds, ps, links)
    ps = _order(ps, ds, links)
    cols = (ds, ps, rs)
    tallest = max((len(c) for c in cols), default=0)
    height = HEAD + max(1, tallest) * (NODE_H + ROW_GAP) + MARGIN
    width = 2 * MARGIN + 3 * COL_W + 2 * GAP
    placed: list[Placed] = []
    at: dict[str, Placed] = {}
    for i, col in enumerate(cols):
        x = MARGIN + i * (COL_W + GAP)
        # Shorter columns are centred against the tallest.
        offset = (tallest - len(col)) * (NODE_H + ROW_GAP) // 2
        for j, n in enumerate(col):
            p = Placed(n, x, HEAD + offset + j * (NODE_H + ROW_GAP))
            placed.append(p)
            at[n.key] = p
    paths = []
    for a, b in m.edges:
        pa, pb = at[a], at[b]
        x1, y1 = pa.x + COL_W, pa.y + NODE_H // 2
        x2, y2 = pb.x, pb.y + NODE_H // 2
        mid = (x1 + x2) // 2
        paths.append(f"M{x1} {y1} C{mid} {y1} {mid} {y2} {x2} {y2}")
    return placed, paths, width, height


@router.get("/data-map")
def data_map(request: Request) -> Response:
    signed = gate(request, "policy:read")
    if isinstance(signed, Response):
        return signed
    cp = signed.web.fid.policy
    m = build(cp)
    placed, paths, width, height = layout(m)
    label = {n.key: n.label for col in m.columns for n in col}
    label.update({n.key: f"{n.label} ({n.sub})" for n in m.columns[2]})
    # The table: one row per purpose, with where its data comes from and goes to.
    rows = [
        {
            "purpose": n.label,
            "basis": n.sub,
            "from": sorted(label[a] for a, b in m.edges if b == n.key),
            "to": sorted(label[b] for a, b in m.edges if a == n.key),
        }
        for n in m.columns[1]
    ]
    idle = [n for n in m.columns[2] if not any(b == n.key for _, b in m.edges)]
    return page(
        request,
        "datamap.html",
        signed,
        title="Data map",
        placed=placed,
        paths=paths,
        width=width,
        height=height,
        col_w=COL_W,
        node_h=NODE_H,
        heads=[(MARGIN + i * (COL_W + GAP), t) for i, t in enumerate(COLUMN_TITLES)],
        counts=[len(c) for c in m.columns],
        edges=len(m.edges),
        rows=rows,
        idle=idle,
        flagged=sum(1 for n in m.columns[2] if n.flag),
    )

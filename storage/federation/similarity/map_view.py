"""The map: a 2-D UMAP of frame embeddings, and the page that draws, filters and re-projects it.

Recursive exploration (after Nguyen, Agar et al. 2021): the page projects the frames the
filters select; a box drawn on the map sends just those frames back, and they are projected
again on their own, so structure hidden in a crowded region spreads out.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sqlalchemy import select

from storage.federation.api_models import SearchIn
from storage.federation.catalog.context import Ctx
from storage.federation.catalog.record_json import record_dicts
from storage.federation.identifiers import format_id
from storage.federation.models import Record
from storage.federation.similarity.index import VectorIndex
from storage.federation.similarity.ops import allowed_records

#: Most frames one projection takes.
MAX_POINTS = 200_000
#: Past this many points UMAP learns the layout on a sample of this size and the rest are
#: placed among their nearest sample points (``place``). The size is the selection the issue
#: bounds for a re-projection (5 000 frames in under 10 s): the first view of a large archive
#: then costs one such projection plus a nearest-neighbour search.
FIT_SAMPLE = 5_000
#: Rows per nearest-neighbour search batch while placing points (bounds the distance matrix).
PLACE_BATCH = 20_000


def layout(vectors: np.ndarray, seed: int = 0) -> np.ndarray:
    """(n, 2) map coordinates in [0, 1] of unit vectors (cosine metric)."""
    n = len(vectors)
    if n == 0:
        return np.zeros((0, 2), np.float32)
    if n < 4:
        xy = np.zeros((n, 2)) + 0.5
        xy[:, 0] = np.linspace(0.2, 0.8, n) if n > 1 else 0.5
        return xy.astype(np.float32)
    with warnings.catch_warnings():
        # umap-learn warns at import that TensorFlow (its optional ParametricUMAP) is absent.
        warnings.simplefilter("ignore", ImportWarning)
        import umap

    neighbours = int(min(15, n - 1))
    model = umap.UMAP(
        n_neighbors=neighbours,
        metric="cosine",
        random_state=seed,
        n_jobs=1,
        init="random" if n < 10 else "spectral",
    )
    if n > FIT_SAMPLE:
        rng = np.random.default_rng(seed)
        sample = np.sort(rng.choice(n, FIT_SAMPLE, replace=False))
        fitted = model.fit_transform(vectors[sample])
        xy = place(vectors, vectors[sample], fitted, neighbours)
        xy[sample] = fitted
    else:
        xy = model.fit_transform(vectors)
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    return ((xy - lo) / np.maximum(hi - lo, 1e-9)).astype(np.float32)


def place(vectors: np.ndarray, sample: np.ndarray, sample_xy: np.ndarray, k: int) -> np.ndarray:
    """(n, 2) positions of unit ``vectors`` among the laid-out ``sample`` (m, d) at ``sample_xy``:
    the mean of their ``k`` nearest sample points' positions, weighted by UMAP's own fuzzy
    membership (``smooth_knn_dist``: each point's kernel fitted so its memberships sum to
    log2 k). This is how UMAP's ``transform`` starts; its further optimisation of each point
    against the graph (most of its cost: 50 s of a 55 s map of 100 000 frames) moves points
    less than the frames of one region are apart, and is skipped.
    """
    import faiss
    from umap.umap_ import smooth_knn_dist

    k = int(min(k, len(sample)))
    index = faiss.IndexFlatIP(sample.shape[1])
    index.add(np.ascontiguousarray(sample, np.float32))
    out = np.empty((len(vectors), 2), np.float32)
    for start in range(0, len(vectors), PLACE_BATCH):
        part = np.ascontiguousarray(vectors[start : start + PLACE_BATCH], np.float32)
        sim, nearest = index.search(part, k)
        dist = np.maximum(1.0 - sim, 0.0).astype(np.float32)  # cosine distance, as the fit used
        sigma, rho = smooth_knn_dist(dist, float(k))
        weight = np.exp(-np.maximum(dist - rho[:, None], 0.0) / np.maximum(sigma[:, None], 1e-12))
        weight /= weight.sum(axis=1, keepdims=True)
        out[start : start + len(part)] = (weight[:, :, None] * sample_xy[nearest]).sum(axis=1)
    return out


def project(
    ctx: Ctx, index: VectorIndex, criteria: SearchIn, selection: list[tuple[str, int]] | None, max_points: int
) -> dict[str, Any]:
    """Map coordinates of the readable frames the criteria (and the selection, if any) pick."""
    with index.lock:
        index.catch_up(ctx.session)
        allowed = allowed_records(ctx, criteria)
        if not len(index) or not len(allowed):
            return {"embedder": index.embedder, "points": [], "truncated": False}
        lut = np.zeros(int(max(allowed.max(), index.record.max())) + 1, bool)
        lut[allowed] = True
        # One point per frame: its own vector, not its crops'.
        mask = lut[index.record] & (index.view == 0)
        if selection is not None:
            wanted = {
                (int(str(r).removeprefix("d/")), int(f))
                for r, f in selection
                if str(r).removeprefix("d/").isdigit()
            }
            keys = index.record * (1 << 32) + index.frame
            chosen = np.array([r * (1 << 32) + f for r, f in wanted], np.int64)
            mask &= np.isin(keys, chosen)
        idx = np.flatnonzero(mask)
        truncated = len(idx) > max_points
        if truncated:
            idx = np.sort(np.random.default_rng(0).choice(idx, max_points, replace=False))
        vectors = index.vectors[idx]
        record, frame = index.record[idx], index.frame[idx]
    xy = layout(vectors)
    rows = ctx.session.scalars(select(Record).where(Record.id.in_(np.unique(record).tolist()))).all()
    meta = {int(d["id"].split("/")[1]): d for d in record_dicts(ctx, rows)}
    points = [
        {
            "id": format_id("d", int(r)),
            "frame": int(f),
            "x": round(float(x), 5),
            "y": round(float(y), 5),
            "title": meta[int(r)]["title"],
            "metadata": meta[int(r)]["metadata"],
        }
        for r, f, (x, y) in zip(record, frame, xy, strict=True)
        if int(r) in meta
    ]
    return {"embedder": index.embedder, "points": points, "truncated": bool(truncated)}


# The embedder field's default is the project's current embedder (``tasks.embedding.
# EMBEDDER_VERSION``, which storage may not import); the browser test opens the page without
# naming one, so the two cannot drift apart unnoticed.
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>scopeflow map</title>
<style>
body{font:14px system-ui,sans-serif;margin:0;display:flex;height:100vh}
#side{width:300px;padding:10px;border-right:1px solid #ccc;overflow:auto}
#side input{width:100%;box-sizing:border-box;margin:2px 0 8px}
#main{flex:1;position:relative}
canvas{position:absolute;inset:0;width:100%;height:100%;cursor:crosshair}
#tip{position:absolute;pointer-events:none;background:#fff;border:1px solid #888;padding:4px;display:none;max-width:260px}
#tip img{width:96px;height:96px;image-rendering:pixelated;display:block}
button{margin:2px 0}
</style></head><body>
<div id="side">
<label>Token <input id="token" type="password"></label>
<label>Embedder <input id="embedder" value="lattice-polar-v4"></label>
<label>Metadata filter <input id="md" placeholder='md.lattice == "mos2"'></label>
<label>Colour by metadata field <input id="colour" value="lattice"></label>
<button id="load">Load map</button>
<button id="reproject" disabled>Re-project selection</button>
<button id="back" disabled>Back</button>
<p id="status">Drag a box to select frames.</p>
<div id="legend"></div>
<p>Clicked: <a id="record" href="#"></a></p>
</div>
<div id="main"><canvas id="map"></canvas><div id="tip"><img id="thumb" alt=""><span id="tiptext"></span></div></div>
<script>
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.hash.slice(1));
if (params.get("token")) $("token").value = params.get("token");
if (params.get("embedder")) $("embedder").value = params.get("embedder");
let points = [], selected = new Set(), history = [], box = null, colours = {};
const palette = ["#1f77b4","#ff7f0e","#2ca02c","#d62728","#9467bd","#8c564b","#e377c2","#7f7f7f","#bcbd22","#17becf"];
function headers() { return {"Authorization": "Bearer " + $("token").value, "Content-Type": "application/json"}; }
async function project(selection) {
  const body = {embedder: $("embedder").value};
  if ($("md").value) body.md = $("md").value;
  if (selection) body.selection = selection;
  $("status").textContent = "projecting…";
  const r = await fetch("/api/map", {method: "POST", headers: headers(), body: JSON.stringify(body)});
  const data = await r.json();
  if (!r.ok) { $("status").textContent = "error: " + (data.detail || r.status); return; }
  points = data.points; selected = new Set();
  $("status").textContent = points.length + " frames" + (data.truncated ? " (a sample)" : "");
  document.body.dataset.points = points.length;
  $("reproject").disabled = true; draw();
}
function field(p) { const f = $("colour").value; return f in p.metadata ? String(p.metadata[f]) : "?"; }
function draw() {
  const c = $("map"), ctx = c.getContext("2d");
  c.width = c.clientWidth; c.height = c.clientHeight;
  ctx.clearRect(0, 0, c.width, c.height);
  colours = {};
  for (const p of points) { const v = field(p); if (!(v in colours)) colours[v] = palette[Object.keys(colours).length % palette.length]; }
  points.forEach((p, i) => {
    ctx.fillStyle = colours[field(p)];
    ctx.globalAlpha = selected.size && !selected.has(i) ? 0.2 : 0.9;
    ctx.fillRect(10 + p.x * (c.width - 20) - 2, 10 + p.y * (c.height - 20) - 2, 4, 4);
  });
  ctx.globalAlpha = 1;
  if (box) { ctx.strokeStyle = "#000"; ctx.strokeRect(box.x0, box.y0, box.x1 - box.x0, box.y1 - box.y0); }
  $("legend").innerHTML = Object.entries(colours).map(([k, v]) => `<div><span style="color:${v}">■</span> ${k}</div>`).join("");
}
function screen(p) { const c = $("map"); return [10 + p.x * (c.clientWidth - 20), 10 + p.y * (c.clientHeight - 20)]; }
function nearest(x, y) {
  let best = -1, bd = 64;
  points.forEach((p, i) => { const [px, py] = screen(p); const d = (px - x) ** 2 + (py - y) ** 2; if (d < bd) { bd = d; best = i; } });
  return best;
}
const canvas = $("map");
canvas.addEventListener("mousedown", (e) => { box = {x0: e.offsetX, y0: e.offsetY, x1: e.offsetX, y1: e.offsetY}; });
canvas.addEventListener("mousemove", async (e) => {
  if (box && e.buttons) { box.x1 = e.offsetX; box.y1 = e.offsetY; draw(); return; }
  const i = nearest(e.offsetX, e.offsetY), tip = $("tip");
  if (i < 0) { tip.style.display = "none"; return; }
  const p = points[i];
  tip.style.display = "block"; tip.style.left = (e.offsetX + 12) + "px"; tip.style.top = (e.offsetY + 12) + "px";
  $("tiptext").textContent = `${p.id} frame ${p.frame}: ${p.title}`;
  const key = p.id + "/" + p.frame;
  if (tip.dataset.key !== key) {
    tip.dataset.key = key;
    const r = await fetch(`/api/records/${p.id.slice(2)}/embeddings/${$("embedder").value}/${p.frame}/thumbnail.png`, {headers: headers()});
    $("thumb").src = r.ok ? URL.createObjectURL(await r.blob()) : "";
  }
});
canvas.addEventListener("mouseup", (e) => {
  if (!box) return;
  const [x0, x1] = [Math.min(box.x0, box.x1), Math.max(box.x0, box.x1)], [y0, y1] = [Math.min(box.y0, box.y1), Math.max(box.y0, box.y1)];
  if (x1 - x0 < 3 && y1 - y0 < 3) {
    const i = nearest(e.offsetX, e.offsetY);
    if (i >= 0) { const p = points[i]; const a = $("record"); a.textContent = `${p.id} frame ${p.frame}`; a.href = `/api/records/${p.id.slice(2)}`; }
  } else {
    selected = new Set();
    points.forEach((p, i) => { const [px, py] = screen(p); if (px >= x0 && px <= x1 && py >= y0 && py <= y1) selected.add(i); });
    $("status").textContent = selected.size + " of " + points.length + " frames selected";
    $("reproject").disabled = selected.size === 0;
  }
  box = null; draw();
});
$("load").onclick = () => { history = []; $("back").disabled = true; project(null); };
$("reproject").onclick = () => {
  history.push(points);
  $("back").disabled = false;
  project([...selected].map((i) => [points[i].id, points[i].frame]));
};
$("back").onclick = () => { points = history.pop() || points; selected = new Set(); $("back").disabled = !history.length; document.body.dataset.points = points.length; draw(); };
$("colour").onchange = draw;
window.addEventListener("resize", draw);
</script></body></html>
"""

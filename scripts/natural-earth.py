#!/usr/bin/env python3
"""Write examples/places/countries.geojson: Natural Earth's admin-0 country
boundaries (public domain), as the npm package world-atlas 2.0.2 redistributes
them in TopoJSON, decoded to a GeoJSON FeatureCollection with one property,
NAME. Usage (needs npm; registry.npmjs.org):

    scripts/natural-earth.py [110m|50m] [OUT]

The TopoJSON decoding (quantized, delta-encoded arcs; a negative arc index ~i
is arc i reversed) follows the TopoJSON specification.
"""
import json, os, subprocess, sys, tarfile, tempfile

scale = sys.argv[1] if len(sys.argv) > 1 else "110m"
out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), "..", "examples", "places", "countries.geojson")
with tempfile.TemporaryDirectory() as d:
    subprocess.run(["npm", "pack", "--silent", "world-atlas@2.0.2"], cwd=d, check=True, stdout=subprocess.DEVNULL)
    with tarfile.open(os.path.join(d, "world-atlas-2.0.2.tgz")) as t:
        topo = json.load(t.extractfile(f"package/countries-{scale}.json"))

(sx, sy), (tx, ty) = topo["transform"]["scale"], topo["transform"]["translate"]
arcs = []
for arc in topo["arcs"]:
    x = y = 0
    pts = []
    for dx, dy in arc:
        x, y = x + dx, y + dy
        pts.append([round(x * sx + tx, 5), round(y * sy + ty, 5)])
    arcs.append(pts)

def ring(indices):
    pts = []
    for i in indices:
        a = arcs[i] if i >= 0 else arcs[~i][::-1]
        pts.extend(a if not pts else a[1:])
    return pts

def clean(r):
    """Consecutive repeats removed; None for a ring of fewer than 3 distinct points."""
    out = [p for i, p in enumerate(r) if i == 0 or p != r[i - 1]]
    return out if len(out) >= 4 and len({tuple(p) for p in out}) >= 3 else None

def clip(r, keep):
    """Sutherland–Hodgman: the part of ring r on one side of x = 180."""
    out = []
    for i in range(len(r) - 1):
        a, b = r[i], r[i + 1]
        ia, ib = keep(a[0]), keep(b[0])
        if ia:
            out.append(a)
        if ia != ib:
            t = (180.0 - a[0]) / (b[0] - a[0])
            out.append([180.0, round(a[1] + t * (b[1] - a[1]), 5)])
    if out:
        out.append(out[0])
    return out

def split(poly):
    """A polygon whose outer ring crosses 180° as parts on either side
    (holes kept only when they do not cross); otherwise as it is."""
    outer = poly[0]
    if all(abs(b[0] - a[0]) <= 180 for a, b in zip(outer, outer[1:])):
        return [poly]
    unwrapped, shift = [outer[0]], 0.0
    for a, b in zip(outer, outer[1:]):
        if b[0] - a[0] > 180: shift -= 360
        elif a[0] - b[0] > 180: shift += 360
        unwrapped.append([b[0] + shift, b[1]])
    if abs(unwrapped[-1][0] - unwrapped[0][0]) > 1e-9:
        return []  # round a pole (Antarctica): not one region of the plane
    if min(x for x, _ in unwrapped) < -180:
        unwrapped = [[x + 360.0, y] for x, y in unwrapped]
    west = clean(clip(unwrapped, lambda x: x <= 180.0))
    east = clean([[round(x - 360.0, 5), y] for x, y in clip(unwrapped, lambda x: x >= 180.0)])
    return [[p] for p in (west, east) if p]

# Outlines the rule checks refuse at this scale (traptor-host rules import
# names why): left out, said on stderr.
REFUSED = {"110m": {"Sudan": "its 1:110m outline crosses itself (quantization); use 50m"}}

features = []
for g in topo["objects"]["countries"]["geometries"]:
    why = REFUSED.get(scale, {}).get(g["properties"]["name"])
    if why:
        print(f"{g['properties']['name']}: {why}; left out", file=sys.stderr)
        continue
    if g["type"] == "Polygon":
        polys = [[ring(r) for r in g["arcs"]]]
    elif g["type"] == "MultiPolygon":
        polys = [[ring(r) for r in p] for p in g["arcs"]]
    else:
        continue
    polys = [[c for c in map(clean, p) if c] for p in polys]
    polys = [q for p in polys if p and clean(p[0]) for q in split(p)]
    if not polys:
        print(f"{g['properties']['name']}: no polygon left; left out", file=sys.stderr)
        continue
    geometry = {"type": "Polygon", "coordinates": polys[0]} if len(polys) == 1 else {"type": "MultiPolygon", "coordinates": polys}
    features.append({"type": "Feature", "properties": {"NAME": g["properties"]["name"]}, "geometry": geometry})
features.sort(key=lambda f: f["properties"]["NAME"])
with open(out, "w") as f:
    f.write('{"type":"FeatureCollection","features":[\n')
    f.write(",\n".join(json.dumps(x, separators=(",", ":"), ensure_ascii=False) for x in features))
    f.write("\n]}\n")
print(f"{out}: {len(features)} countries", file=sys.stderr)

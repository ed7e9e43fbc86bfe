//! Boxes around a polygon, for the APIs that take only boxes (v1.1
//! `locations`: 25 boxes per connection; X v2 `bounding_box:`, at most 25
//! miles a side). The API sends every post in the boxes; the local matcher
//! keeps those inside the polygon (DESIGN §4), so a cover must hold the
//! whole polygon and should hold little else.
//!
//! Each polygon is cut into a grid over its envelope; the cells an edge
//! may pass through or that lie inside are kept (`grid::classify`); a row's runs of kept cells stacked
//! with the same runs of the rows below make rectangles; then the two
//! rectangles whose merger adds least area are merged until the budget is
//! met. Merging only grows boxes, so the cover always holds the polygon.

use geo::{ChamberlainDuquetteArea, Coord, Intersects, MultiPolygon, Polygon, Rect};

use super::grid::{self, Axis, OUTSIDE};
use crate::post::BBox;

/// A polygon's boxes.
#[derive(Debug, Clone, PartialEq)]
pub struct Cover {
    pub boxes: Vec<BBox>,
    /// The share (0…1) of the boxes' area outside the polygon: posts the
    /// API sends that the matcher will not attribute (`outside_polygon`).
    pub outside_share: f64,
}

/// Grid cells per side of each polygon before merging.
const GRID: usize = 16;
/// Rectangles the merge starts from at most (it costs their number cubed).
const MAX_START: usize = 160;

/// Cover `polys` with at most `max_boxes` boxes (at least 1).
pub fn cover(polys: &MultiPolygon<f64>, max_boxes: usize) -> Cover {
    let max_boxes = max_boxes.max(1);
    let mut grid = GRID;
    let mut rects = loop {
        let rects: Vec<BBox> = polys.0.iter().flat_map(|p| cells(p, grid)).collect();
        if rects.len() <= MAX_START.max(max_boxes) || grid == 1 {
            break rects;
        }
        grid /= 2;
    };
    if rects.len() > MAX_START {
        rects = squash(rects, MAX_START);
    }
    rects = rects.iter().filter_map(|r| tighten(r, polys)).collect();
    merge(&mut rects, max_boxes);
    // Each box shrunk to the polygon's part in it (so a box ends where the
    // polygon does, not where the grid did), then rounded outward.
    let margin =
        |b: BBox| BBox { west: b.west - 1e-9, south: b.south - 1e-9, east: b.east + 1e-9, north: b.north + 1e-9 };
    rects = rects.iter().filter_map(|r| tighten(r, polys)).map(|r| round_out(&margin(r), 1e6)).collect();
    let outside_share = outside_share(polys, &rects);
    Cover { boxes: rects, outside_share }
}

/// Boxes of at most `side_deg` degrees of longitude and `side_lat` of
/// latitude each, as few as the grid allows (X v2's 25-mile boxes).
pub fn cover_by_size(polys: &MultiPolygon<f64>, side_lng: f64, side_lat: f64) -> Vec<BBox> {
    let mut out = Vec::new();
    for p in &polys.0 {
        let Some(env) = grid::envelope(p) else { continue };
        let cols = (((env.east - env.west) / side_lng).ceil() as usize).max(1);
        let rows = (((env.north - env.south) / side_lat).ceil() as usize).max(1);
        if cols.saturating_mul(rows) > 1 << 20 {
            // Callers refuse far fewer boxes than this; say "too many".
            out.extend(std::iter::repeat_n(env, 1 << 20));
            continue;
        }
        out.extend(grid_rects(p, env, cols, rows, false));
    }
    out
}

fn cells(p: &Polygon<f64>, grid: usize) -> Vec<BBox> {
    match grid::envelope(p) {
        Some(env) => grid_rects(p, env, grid, grid, true),
        None => Vec::new(),
    }
}

/// The kept cells of a `cols` × `rows` grid over `env`, as rectangles
/// (stacked when `stack`, else one per run of a row).
fn grid_rects(p: &Polygon<f64>, env: BBox, cols: usize, rows: usize, stack: bool) -> Vec<BBox> {
    let (x, y) = (Axis::new(env.west, env.east, cols), Axis::new(env.south, env.north, rows));
    let edges = grid::edges(p);
    let cells = grid::classify(&edges, x, y, |c| grid::parity(edges.iter().copied(), c) != Some(false));
    let kept: Vec<bool> = cells.iter().map(|&c| c != OUTSIDE).collect();
    // Bounds of cells c0..=c1 (rows r0..=r1), a hair wider than the cells
    // so rounding can never leave a sliver of the polygon out.
    let bounds = |c0: usize, c1: usize, r0: usize, r1: usize| {
        let (ex, ey) = ((env.east - env.west) * 1e-9, (env.north - env.south) * 1e-9);
        BBox {
            west: if c0 == 0 { env.west } else { (x.start(c0) - ex).max(env.west) },
            east: if c1 + 1 == cols { env.east } else { (x.start(c1 + 1) + ex).min(env.east) },
            south: if r0 == 0 { env.south } else { (y.start(r0) - ey).max(env.south) },
            north: if r1 + 1 == rows { env.north } else { (y.start(r1 + 1) + ey).min(env.north) },
        }
    };
    // Runs per row; a run continues upward while the next row has it too.
    let mut open: Vec<(usize, usize, usize)> = Vec::new(); // (c0, c1, first row)
    let mut out = Vec::new();
    for r in 0..=rows {
        let mut runs = Vec::new();
        if r < rows {
            let mut c = 0;
            while c < cols {
                if kept[r * cols + c] {
                    let c0 = c;
                    while stack && c + 1 < cols && kept[r * cols + c + 1] {
                        c += 1;
                    }
                    runs.push((c0, c));
                }
                c += 1;
            }
        }
        let mut next = Vec::new();
        for (c0, c1, r0) in open.drain(..) {
            match runs.iter().position(|&run| run == (c0, c1)) {
                Some(i) if stack => {
                    runs.remove(i);
                    next.push((c0, c1, r0));
                }
                _ => out.push(bounds(c0, c1, r0, r - 1)),
            }
        }
        next.extend(runs.into_iter().map(|(c0, c1)| (c0, c1, r)));
        open = next;
    }
    out
}

/// `b` grown to the next multiple of `1 / per` on every side (short
/// numbers for an API's parameters; never smaller, so the cover holds).
pub fn round_out(b: &BBox, per: f64) -> BBox {
    let down = |v: f64, lo: f64| {
        let r = (v * per).floor() / per;
        (if r > v { r - 1.0 / per } else { r }).max(lo)
    };
    let up = |v: f64, hi: f64| {
        let r = (v * per).ceil() / per;
        (if r < v { r + 1.0 / per } else { r }).min(hi)
    };
    BBox { west: down(b.west, -180.0), south: down(b.south, -90.0), east: up(b.east, 180.0), north: up(b.north, 90.0) }
}

fn union(a: &BBox, b: &BBox) -> BBox {
    BBox {
        west: a.west.min(b.west),
        south: a.south.min(b.south),
        east: a.east.max(b.east),
        north: a.north.max(b.north),
    }
}

fn area(b: &BBox) -> f64 {
    (b.east - b.west) * (b.north - b.south)
}

/// The box around the part of `polys` inside `r` (`None`: no part): its
/// extremes are where an edge crosses `r`, an edge's end inside `r`, or a
/// corner of `r` inside a polygon.
fn tighten(r: &BBox, polys: &MultiPolygon<f64>) -> Option<BBox> {
    let mut pts: Vec<crate::post::Point> = Vec::new();
    for p in &polys.0 {
        for ring in std::iter::once(p.exterior()).chain(p.interiors()) {
            for l in ring.lines() {
                if let Some((a, b)) = clip(r, l.start, l.end) {
                    pts.extend([a, b].map(|c| crate::post::Point { lng: c.x, lat: c.y }));
                }
            }
        }
        for (x, y) in [(r.west, r.south), (r.west, r.north), (r.east, r.south), (r.east, r.north)] {
            if p.intersects(&Coord { x, y }) {
                pts.push(crate::post::Point { lng: x, lat: y });
            }
        }
    }
    BBox::around(pts)
}

/// The part of segment `a`–`b` inside `r` (Liang–Barsky), if any.
fn clip(r: &BBox, a: Coord<f64>, b: Coord<f64>) -> Option<(Coord<f64>, Coord<f64>)> {
    let (dx, dy) = (b.x - a.x, b.y - a.y);
    let (mut t0, mut t1) = (0.0f64, 1.0f64);
    for (p, q) in [(-dx, a.x - r.west), (dx, r.east - a.x), (-dy, a.y - r.south), (dy, r.north - a.y)] {
        if p == 0.0 {
            if q < 0.0 {
                return None;
            }
        } else {
            let t = q / p;
            if p < 0.0 {
                t0 = t0.max(t);
            } else {
                t1 = t1.min(t);
            }
        }
    }
    if t0 > t1 {
        return None;
    }
    let at = |t: f64| Coord { x: (a.x + t * dx).clamp(r.west, r.east), y: (a.y + t * dy).clamp(r.south, r.north) };
    Some((if t0 == 0.0 { a } else { at(t0) }, if t1 == 1.0 { b } else { at(t1) }))
}

/// Merge the pair whose union adds least area, until `max` are left.
fn merge(rects: &mut Vec<BBox>, max: usize) {
    while rects.len() > max {
        let mut best = (f64::INFINITY, 0, 1);
        for i in 0..rects.len() {
            for j in i + 1..rects.len() {
                let added = area(&union(&rects[i], &rects[j])) - area(&rects[i]) - area(&rects[j]);
                if added < best.0 {
                    best = (added, i, j);
                }
            }
        }
        let (_, i, j) = best;
        let b = rects.swap_remove(j);
        rects[i] = union(&rects[i], &b);
    }
}

/// Too many parts (islands) to merge pairwise: join neighbours in x order.
fn squash(mut rects: Vec<BBox>, max: usize) -> Vec<BBox> {
    rects.sort_by(|a, b| (a.west + a.east).total_cmp(&(b.west + b.east)));
    let per = rects.len().div_ceil(max);
    rects.chunks(per).filter_map(|c| c.iter().copied().reduce(|a, b| union(&a, &b))).collect()
}

/// The share of the boxes' area (on the sphere) outside the polygons: the
/// boxes' union is cut at every box edge into cells, each counted once.
fn outside_share(polys: &MultiPolygon<f64>, boxes: &[BBox]) -> f64 {
    let mut xs: Vec<f64> = boxes.iter().flat_map(|b| [b.west, b.east]).collect();
    let mut ys: Vec<f64> = boxes.iter().flat_map(|b| [b.south, b.north]).collect();
    for v in [&mut xs, &mut ys] {
        v.sort_by(f64::total_cmp);
        v.dedup();
    }
    let mut covered = 0.0;
    for x in xs.windows(2) {
        for y in ys.windows(2) {
            let mid = (x[0] + x[1]) / 2.0;
            let (my, cell) = ((y[0] + y[1]) / 2.0, BBox { west: x[0], south: y[0], east: x[1], north: y[1] });
            if boxes.iter().any(|b| b.contains(crate::post::Point { lng: mid, lat: my })) {
                covered += sphere_area(&cell);
            }
        }
    }
    if covered <= 0.0 {
        return 0.0;
    }
    (1.0 - polys.chamberlain_duquette_unsigned_area() / covered).clamp(0.0, 1.0)
}

fn sphere_area(b: &BBox) -> f64 {
    Rect::new(Coord { x: b.west, y: b.south }, Coord { x: b.east, y: b.north })
        .to_polygon()
        .chamberlain_duquette_unsigned_area()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::geometry::parse_shape;
    use proptest::prelude::*;

    fn covered(boxes: &[BBox], x: f64, y: f64) -> bool {
        boxes.iter().any(|b| b.contains(crate::post::Point { lng: x, lat: y }))
    }

    /// A star-shaped (so simple) polygon around (cx, cy).
    fn star(cx: f64, cy: f64, radii: &[f64]) -> String {
        let n = radii.len();
        let mut pts: Vec<String> = radii
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let a = std::f64::consts::TAU * i as f64 / n as f64;
                format!("[{},{}]", cx + r * a.cos(), cy + r * a.sin())
            })
            .collect();
        pts.push(pts[0].clone());
        format!(r#"{{"type":"Polygon","coordinates":[[{}]]}}"#, pts.join(","))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, rng_seed: proptest::test_runner::RngSeed::Fixed(28), ..ProptestConfig::default() })]
        /// Every vertex, every point along every edge and every inside point
        /// of a grid lies in one of the cover's boxes, whatever the budget.
        #[test]
        fn the_cover_always_contains_the_polygon(
            cx in -170.0f64..170.0, cy in -80.0f64..80.0,
            radii in proptest::collection::vec(0.05f64..9.0, 3..60),
            max_boxes in 1usize..26,
        ) {
            let shape = parse_shape(&star(cx, cy, &radii), max_boxes).expect("a star is valid");
            let poly = &shape.polygons().0[0];
            let c = shape.cover();
            prop_assert!(!c.boxes.is_empty() && c.boxes.len() <= max_boxes);
            prop_assert!((0.0..=1.0).contains(&c.outside_share));
            for l in poly.exterior().lines() {
                for k in 0..=8 {
                    let t = f64::from(k) / 8.0;
                    let (x, y) = (l.start.x + (l.end.x - l.start.x) * t, l.start.y + (l.end.y - l.start.y) * t);
                    prop_assert!(covered(&c.boxes, x, y), "({x}, {y}) on an edge is outside the cover");
                }
            }
            let env = shape.envelope();
            for i in 0..=40 {
                for j in 0..=40 {
                    let x = env.west + (env.east - env.west) * f64::from(i) / 40.0;
                    let y = env.south + (env.north - env.south) * f64::from(j) / 40.0;
                    if poly.intersects(&Coord { x, y }) {
                        prop_assert!(covered(&c.boxes, x, y), "({x}, {y}) inside is outside the cover");
                    }
                }
            }
        }
    }

    #[test]
    fn more_boxes_leave_less_outside() {
        // An L: one box around it is 4/9 outside; a few boxes, a sliver
        // (the grid's row that holds the inner corner).
        let l = parse_shape("POLYGON((0 0, 3 0, 3 1, 1 1, 1 3, 0 3, 0 0))", 1).expect("valid");
        assert_eq!(l.cover().boxes.len(), 1);
        assert!((l.cover().outside_share - 4.0 / 9.0).abs() < 0.02, "{}", l.cover().outside_share);
        let l = parse_shape("POLYGON((0 0, 3 0, 3 1, 1 1, 1 3, 0 3, 0 0))", 4).expect("valid");
        assert!(l.cover().boxes.len() <= 4);
        assert!(l.cover().outside_share < 0.06, "{:?}", l.cover());
    }

    #[test]
    fn islands_past_the_budget_are_joined() {
        let parts: Vec<String> = (0..300)
            .map(|i| {
                let x = -179.0 + f64::from(i) * 1.1;
                format!("(({x} 0, {} 0, {} 1, {x} 1, {x} 0))", x + 0.5, x + 0.5)
            })
            .collect();
        let s = parse_shape(&format!("MULTIPOLYGON({})", parts.join(",")), 25).expect("valid");
        let c = s.cover();
        assert!(c.boxes.len() <= 25);
        for i in 0..300 {
            let x = -179.0 + f64::from(i) * 1.1;
            assert!(covered(&c.boxes, x + 0.25, 0.5));
        }
    }

    #[test]
    fn boxes_by_size_keep_to_the_size() {
        let s = parse_shape("POLYGON((0 0, 2 0, 2 1, 0 1, 0 0))", 25).expect("valid");
        let boxes = cover_by_size(s.polygons(), 0.3, 0.3);
        assert!(boxes.iter().all(|b| b.east - b.west <= 0.3 + 1e-9 && b.north - b.south <= 0.3 + 1e-9));
        assert!(covered(&boxes, 1.99, 0.99) && covered(&boxes, 0.0, 0.0));
    }
}

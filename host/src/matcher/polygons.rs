//! Polygon location rules: a post's point inside a polygon (not in a hole;
//! the boundary counts as inside), else its place's box meeting it.
//!
//! Candidates come from the polygons' envelopes: a scan up to [`SCAN_MAX`],
//! beyond a uniform grid of buckets over the globe (matcher bench, 1,000
//! polygons: an `rstar` R-tree query cost ~150 ns a post, the buckets one
//! lookup). The exact test is then nearly constant time
//! whatever the vertex count: each polygon keeps a grid over its envelope
//! whose cells are marked inside, outside or boundary when the rules are
//! compiled; a point in an inside or outside cell is answered by one lookup,
//! and only a point in a boundary cell is tested against the edges of its
//! horizontal band (crossing parity with `geo`'s exact orientation
//! predicate, so a point on an edge is found on it whatever the rounding).
//! A place's box: a point of it inside, or an edge meeting it.
//! The grid, the parity and why they are exact: `rules/grid.rs`.

use std::sync::Arc;

use super::RuleIdx;
use crate::post::{BBox, Point};
use crate::rules::geometry::Shape;
use crate::rules::grid::{self, Axis, Edge, INSIDE, OUTSIDE};

/// Below this many polygons, a linear scan of the envelopes.
const SCAN_MAX: usize = 32;
/// Grid cells per side: about two per √vertex, within these bounds.
const GRID_MIN: usize = 4;
const GRID_MAX: usize = 128;

/// The polygons of every polygon rule, each part of a multipolygon apart.
#[derive(Debug, Default)]
pub struct PolygonIndex {
    parts: Vec<Part>,
    buckets: Option<Buckets>,
}

/// Part indices by cell of a grid over the globe (CSR), each part in every
/// cell its envelope touches.
#[derive(Debug)]
struct Buckets {
    x: Axis,
    y: Axis,
    start: Vec<u32>,
    parts: Vec<u32>,
}

impl Buckets {
    fn new(parts: &[Part]) -> Buckets {
        // Cells of 1° or more: as fine as keeps the lists within ~16 entries
        // per part (a country's envelope spans many cells, a city's one).
        let mut side = 1.0f64;
        loop {
            let (x, y) =
                (Axis::new(-180.0, 180.0, (360.0 / side) as usize), Axis::new(-90.0, 90.0, (180.0 / side) as usize));
            let span = |p: &Part| {
                (x.cell(p.env.east) - x.cell(p.env.west) + 1) * (y.cell(p.env.north) - y.cell(p.env.south) + 1)
            };
            let total: usize = parts.iter().map(span).sum();
            if total <= 16 * parts.len() + (1 << 16) || side >= 90.0 {
                return Buckets::fill(parts, x, y);
            }
            side *= 2.0;
        }
    }

    fn fill(parts: &[Part], x: Axis, y: Axis) -> Buckets {
        let cells = |p: &Part| {
            let (c0, c1, r0, r1) = (x.cell(p.env.west), x.cell(p.env.east), y.cell(p.env.south), y.cell(p.env.north));
            (r0..=r1).flat_map(move |r| (c0..=c1).map(move |c| r * x.n + c))
        };
        let mut start = vec![0u32; x.n * y.n + 1];
        for p in parts {
            cells(p).for_each(|i| start[i + 1] += 1);
        }
        for i in 0..x.n * y.n {
            start[i + 1] += start[i];
        }
        let mut fill = start.clone();
        let mut list = vec![0u32; start[x.n * y.n] as usize];
        for (k, p) in parts.iter().enumerate() {
            for i in cells(p) {
                list[fill[i] as usize] = k as u32;
                fill[i] += 1;
            }
        }
        Buckets { x, y, start, parts: list }
    }

    fn cell(&self, c: usize, r: usize) -> &[u32] {
        let i = r * self.x.n + c;
        &self.parts[self.start[i] as usize..self.start[i + 1] as usize]
    }
}

/// Cells a place's box may span before a scan of every part is cheaper.
const MAX_QUERY_CELLS: usize = 4096;

#[derive(Debug)]
struct Part {
    rule: RuleIdx,
    env: BBox,
    grid: Grid,
    /// Every edge of every ring: `[x0, y0, x1, y1]`.
    edges: Vec<Edge>,
    /// Edge indices by horizontal band (CSR: `band_start[b]..band_start[b + 1]`).
    band_start: Vec<u32>,
    band_edges: Vec<u32>,
}

#[derive(Debug)]
struct Grid {
    x: Axis,
    y: Axis,
    cells: Vec<u8>,
}

impl PolygonIndex {
    pub fn new(shapes: Vec<(Arc<Shape>, RuleIdx)>) -> PolygonIndex {
        let parts: Vec<Part> =
            shapes.iter().flat_map(|(s, r)| s.polygons().0.iter().map(move |p| Part::new(p, *r))).collect();
        let buckets = (parts.len() > SCAN_MAX).then(|| Buckets::new(&parts));
        PolygonIndex { parts, buckets }
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// The parts whose envelope shares a point with `q`, each once: a part
    /// is taken in the one cell that holds the south-west corner of its
    /// envelope's overlap with `q`.
    fn candidates<'a>(&'a self, q: &BBox, mut each: impl FnMut(&'a Part)) {
        let finite = [q.west, q.south, q.east, q.north].iter().all(|v| v.is_finite());
        match &self.buckets {
            Some(b) if finite => {
                let (c0, c1, r0, r1) = (b.x.cell(q.west), b.x.cell(q.east), b.y.cell(q.south), b.y.cell(q.north));
                if (c1 - c0 + 1) * (r1 - r0 + 1) > MAX_QUERY_CELLS {
                    return self.parts.iter().filter(|p| p.env.overlaps(q)).for_each(each);
                }
                for r in r0..=r1 {
                    for c in c0..=c1 {
                        for &k in b.cell(c, r) {
                            let p = &self.parts[k as usize];
                            let first =
                                b.x.cell(q.west.max(p.env.west)) == c && b.y.cell(q.south.max(p.env.south)) == r;
                            if first && p.env.overlaps(q) {
                                each(p);
                            }
                        }
                    }
                }
            }
            _ => self.parts.iter().filter(|p| p.env.overlaps(q)).for_each(each),
        }
    }

    /// The rules whose polygon holds `p`. True when `p` was in a polygon's
    /// envelope but outside that polygon (`outside_polygon`).
    pub fn at_point(&self, p: Point, out: &mut Vec<RuleIdx>) -> bool {
        let mut outside = false;
        self.candidates(&BBox { west: p.lng, south: p.lat, east: p.lng, north: p.lat }, |part| {
            if part.contains(p) {
                out.push(part.rule);
            } else {
                outside = true;
            }
        });
        outside
    }

    /// Whether rule `rule`'s polygon holds the point, else meets the place.
    pub fn holds(&self, rule: RuleIdx, point: Option<Point>, place: Option<BBox>) -> bool {
        let mut yes = false;
        match (point, place) {
            (Some(p), _) => self.candidates(&BBox { west: p.lng, south: p.lat, east: p.lng, north: p.lat }, |part| {
                yes |= part.rule == rule && part.contains(p);
            }),
            (None, Some(q)) => self.candidates(&q, |part| yes |= part.rule == rule && part.meets(&q)),
            (None, None) => {}
        }
        yes
    }

    /// The rules whose polygon meets `place`; true as for [`Self::at_point`].
    pub fn overlapping(&self, place: &BBox, out: &mut Vec<RuleIdx>) -> bool {
        let mut outside = false;
        self.candidates(place, |part| {
            if part.meets(place) {
                out.push(part.rule);
            } else {
                outside = true;
            }
        });
        outside
    }
}

impl Part {
    fn new(poly: &geo::Polygon<f64>, rule: RuleIdx) -> Part {
        let edges = grid::edges(poly);
        let env = grid::envelope(poly).unwrap_or(BBox { west: 0.0, south: 0.0, east: -1.0, north: -1.0 });
        let g = (((edges.len() as f64).sqrt() * 2.0) as usize).clamp(GRID_MIN, GRID_MAX);
        let (x, y) = (Axis::new(env.west, env.east, g), Axis::new(env.south, env.north, g));
        let (band_start, band_edges) = bands(&edges, env);
        let mut part = Part { rule, env, grid: Grid { x, y, cells: Vec::new() }, edges, band_start, band_edges };
        part.grid.cells = grid::classify(&part.edges, x, y, |p| part.exact(p));
        part
    }

    fn bands(&self) -> Axis {
        Axis::new(self.env.south, self.env.north, self.band_start.len() - 1)
    }

    /// Inside or on the boundary, by the grid, else exactly.
    #[inline]
    fn contains(&self, p: Point) -> bool {
        if !self.env.contains(p) {
            return false;
        }
        let g = &self.grid;
        match g.cells[g.y.cell(p.lat) * g.x.n + g.x.cell(p.lng)] {
            INSIDE => true,
            OUTSIDE => false,
            _ => self.exact(p),
        }
    }

    /// Crossing parity over the edges of `p`'s band (the only edges a ray
    /// to +x from `p` can cross); a point on an edge is inside.
    fn exact(&self, p: Point) -> bool {
        let b = self.bands().cell(p.lat);
        let band = &self.band_edges[self.band_start[b] as usize..self.band_start[b + 1] as usize];
        grid::parity(band.iter().map(|&e| self.edges[e as usize]), p).unwrap_or(true)
    }

    /// A place's box meets the polygon (touching counts): a point of the box
    /// is inside, or an edge meets the box. If no edge meets it, the box is
    /// wholly inside or outside, and its centre says which.
    fn meets(&self, q: &BBox) -> bool {
        if self.contains(Point { lng: (q.west + q.east) / 2.0, lat: (q.south + q.north) / 2.0 }) {
            return true;
        }
        let bands = self.bands();
        let (b0, b1) = (bands.cell(q.south), bands.cell(q.north));
        let (from, to) = (self.band_start[b0] as usize, self.band_start[b1 + 1] as usize);
        // Edges in the box's bands (an edge in several is tested in each).
        self.band_edges[from..to].iter().any(|&e| grid::edge_meets_box(self.edges[e as usize], q))
    }
}

/// Edge indices by horizontal band (an edge is in every band its latitudes
/// span): one band per edge or so, fewer when tall edges would make the
/// lists more than 8 entries per edge.
fn bands(edges: &[Edge], env: BBox) -> (Vec<u32>, Vec<u32>) {
    let mut n = edges.len().clamp(1, 4096);
    let (axis, mut count) = loop {
        let axis = Axis::new(env.south, env.north, n);
        let mut count = vec![0u32; axis.n + 1];
        let mut total = 0usize;
        for e in edges {
            let (lo, hi) = (axis.cell(e[1].min(e[3])), axis.cell(e[1].max(e[3])));
            count[lo + 1..=hi + 1].iter_mut().for_each(|c| *c += 1);
            total += hi - lo + 1;
        }
        if total <= 8 * edges.len() + 64 || n == 1 {
            break (axis, count);
        }
        n /= 2;
    };
    let span = |e: &Edge| axis.cell(e[1].min(e[3]))..=axis.cell(e[1].max(e[3]));
    for b in 0..axis.n {
        count[b + 1] += count[b];
    }
    let mut fill = count.clone();
    let mut list = vec![0u32; count[axis.n] as usize];
    for (i, e) in edges.iter().enumerate() {
        for b in span(e) {
            list[fill[b] as usize] = i as u32;
            fill[b] += 1;
        }
    }
    (count, list)
}

#[cfg(test)]
#[path = "polygons_tests.rs"]
mod tests;

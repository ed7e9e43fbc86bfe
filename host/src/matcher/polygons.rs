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
//! A place's box is tested with `geo`'s rectangle–polygon intersection.
//!
//! Why the grid is exact: a cell's index is a monotone function of the
//! coordinates, so every point of an edge falls in a cell its bounding box
//! marks; a cell no edge marks holds no boundary point, so all of it is on
//! one side of the boundary, and its centre (checked to fall back in the
//! cell) says which.

use std::sync::Arc;

use geo::kernels::{Kernel, Orientation, RobustKernel};
use geo::{Coord, Intersects, Polygon, Rect};

use super::RuleIdx;
use crate::post::{BBox, Point};
use crate::rules::geometry::Shape;

/// Below this many polygons, a linear scan of the envelopes.
const SCAN_MAX: usize = 32;
/// Grid cells per side: about two per √vertex, within these bounds.
const GRID_MIN: usize = 4;
const GRID_MAX: usize = 128;

const OUTSIDE: u8 = 0;
const INSIDE: u8 = 1;
const BOUNDARY: u8 = 2;

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
    shape: Arc<Shape>,
    /// Which polygon of the shape.
    k: usize,
    grid: Grid,
    /// Every edge of every ring: `[x0, y0, x1, y1]`.
    edges: Vec<[f64; 4]>,
    /// Edge indices by horizontal band (CSR: `band_start[b]..band_start[b + 1]`).
    band_start: Vec<u32>,
    band_edges: Vec<u32>,
}

/// A monotone map from a coordinate to one of `n` cells over `[lo, hi]`.
#[derive(Debug, Clone, Copy)]
struct Axis {
    lo: f64,
    scale: f64,
    n: usize,
}

impl Axis {
    fn new(lo: f64, hi: f64, n: usize) -> Axis {
        let span = hi - lo;
        Axis { lo, scale: if span > 0.0 { n as f64 / span } else { 0.0 }, n }
    }
    #[inline]
    fn cell(&self, v: f64) -> usize {
        // `as` saturates (and maps NaN to 0); `min` keeps the top edge in.
        (((v - self.lo) * self.scale) as usize).min(self.n - 1)
    }
    fn centre(&self, i: usize) -> f64 {
        if self.scale == 0.0 { self.lo } else { self.lo + (i as f64 + 0.5) / self.scale }
    }
}

#[derive(Debug)]
struct Grid {
    x: Axis,
    y: Axis,
    cells: Vec<u8>,
}

impl PolygonIndex {
    pub fn new(shapes: Vec<(Arc<Shape>, RuleIdx)>) -> PolygonIndex {
        let parts: Vec<Part> = shapes
            .iter()
            .flat_map(|(s, r)| (0..s.polygons().0.len()).map(move |k| Part::new(Arc::clone(s), k, *r)))
            .collect();
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
    fn new(shape: Arc<Shape>, k: usize, rule: RuleIdx) -> Part {
        let poly = &shape.polygons().0[k];
        let edges: Vec<[f64; 4]> = std::iter::once(poly.exterior())
            .chain(poly.interiors())
            .flat_map(|ring| ring.lines().map(|l| [l.start.x, l.start.y, l.end.x, l.end.y]))
            .collect();
        let env = BBox::around(poly.exterior().coords().map(|c| Point { lng: c.x, lat: c.y })).unwrap_or(BBox {
            west: 0.0,
            south: 0.0,
            east: -1.0,
            north: -1.0,
        });
        let n = ((edges.len() as f64).sqrt() * 2.0) as usize;
        let g = n.clamp(GRID_MIN, GRID_MAX);
        let grid =
            Grid { x: Axis::new(env.west, env.east, g), y: Axis::new(env.south, env.north, g), cells: Vec::new() };
        let (band_start, band_edges) = bands(&edges, env);
        let mut part = Part { rule, env, shape, k, grid, edges, band_start, band_edges };
        part.grid.cells = part.classify();
        part
    }

    fn bands(&self) -> Axis {
        Axis::new(self.env.south, self.env.north, self.band_start.len() - 1)
    }

    /// Mark boundary cells from the edges' boxes, then each run of unmarked
    /// cells in a row (all on one side) by its first cell's centre.
    fn classify(&self) -> Vec<u8> {
        let Grid { x, y, .. } = self.grid;
        let mut cells = vec![OUTSIDE; x.n * y.n];
        for &[x0, y0, x1, y1] in &self.edges {
            let (c0, c1) = (x.cell(x0.min(x1)), x.cell(x0.max(x1)));
            for r in y.cell(y0.min(y1))..=y.cell(y0.max(y1)) {
                cells[r * x.n + c0..=r * x.n + c1].iter_mut().for_each(|c| *c = BOUNDARY);
            }
        }
        for r in 0..y.n {
            let mut state = None;
            for c in 0..x.n {
                let i = r * x.n + c;
                if cells[i] == BOUNDARY {
                    state = None;
                    continue;
                }
                let s = *state.get_or_insert_with(|| {
                    let p = Point { lng: x.centre(c), lat: y.centre(r) };
                    if x.cell(p.lng) != c || y.cell(p.lat) != r {
                        BOUNDARY // the centre rounds into another cell: test exactly
                    } else if self.exact(p) {
                        INSIDE
                    } else {
                        OUTSIDE
                    }
                });
                cells[i] = s;
            }
        }
        cells
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

    /// Crossing parity of a ray to +x over the edges of `p`'s band; a point
    /// on an edge is inside.
    fn exact(&self, p: Point) -> bool {
        let b = self.bands().cell(p.lat);
        let c = Coord { x: p.lng, y: p.lat };
        let mut inside = false;
        for &e in &self.band_edges[self.band_start[b] as usize..self.band_start[b + 1] as usize] {
            let [x0, y0, x1, y1] = self.edges[e as usize];
            let (a, z) = (Coord { x: x0, y: y0 }, Coord { x: x1, y: y1 });
            let up = y0 <= p.lat && p.lat < y1;
            let down = y1 <= p.lat && p.lat < y0;
            let within = x0.min(x1) <= p.lng && p.lng <= x0.max(x1) && y0.min(y1) <= p.lat && p.lat <= y0.max(y1);
            if !(up || down || within) {
                continue;
            }
            let o = RobustKernel::orient2d(a, z, c);
            if o == Orientation::Collinear && within {
                return true;
            }
            if (up && o == Orientation::CounterClockwise) || (down && o == Orientation::Clockwise) {
                inside = !inside;
            }
        }
        inside
    }

    /// A place's box meets the polygon (touching counts).
    fn meets(&self, place: &BBox) -> bool {
        let centre = Point { lng: (place.west + place.east) / 2.0, lat: (place.south + place.north) / 2.0 };
        if self.contains(centre) {
            return true;
        }
        let poly: &Polygon<f64> = &self.shape.polygons().0[self.k];
        let rect = Rect::new(Coord { x: place.west, y: place.south }, Coord { x: place.east, y: place.north });
        rect.intersects(poly)
    }
}

/// Edge indices by horizontal band (an edge is in every band its latitudes
/// span): one band per edge or so, fewer when tall edges would make the
/// lists more than 8 entries per edge.
fn bands(edges: &[[f64; 4]], env: BBox) -> (Vec<u32>, Vec<u32>) {
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
    let span = |e: &[f64; 4]| axis.cell(e[1].min(e[3]))..=axis.cell(e[1].max(e[3]));
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

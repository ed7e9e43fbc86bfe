//! What the polygon checks, the covers and the matcher share: a polygon's
//! edges, crossing parity with an exact orientation predicate, and a grid
//! over an envelope whose cells are marked inside, outside or boundary.
//!
//! Why a marked grid is exact: [`Axis::cell`] is monotone in the
//! coordinate, so every point of an edge falls in a cell its bounding box
//! marks; a cell no edge marks holds no boundary point, so all of it lies on
//! one side of the boundary, and one point of it says which — as do the
//! cells next to it in its row up to the next marked one.

use geo::kernels::{Kernel, Orientation, RobustKernel};
use geo::{Coord, Polygon};

use crate::post::{BBox, Point};

pub const OUTSIDE: u8 = 0;
pub const INSIDE: u8 = 1;
pub const BOUNDARY: u8 = 2;

/// An edge: `[x0, y0, x1, y1]`.
pub type Edge = [f64; 4];

/// Every edge of every ring of `p` (shell, then holes).
pub fn edges(p: &Polygon<f64>) -> Vec<Edge> {
    std::iter::once(p.exterior())
        .chain(p.interiors())
        .flat_map(|ring| ring.lines().map(|l| [l.start.x, l.start.y, l.end.x, l.end.y]))
        .collect()
}

/// The box around `p`'s shell (its holes lie inside it).
pub fn envelope(p: &Polygon<f64>) -> Option<BBox> {
    BBox::around(p.exterior().coords().map(|c| Point { lng: c.x, lat: c.y }))
}

/// Where `p` lies against closed rings given as edges: `Some(true)` inside
/// (odd crossings of a ray to +x), `Some(false)` outside, `None` on an edge.
pub fn parity(edges: impl IntoIterator<Item = Edge>, p: Point) -> Option<bool> {
    let c = Coord { x: p.lng, y: p.lat };
    let mut inside = false;
    for [x0, y0, x1, y1] in edges {
        let up = y0 <= p.lat && p.lat < y1;
        let down = y1 <= p.lat && p.lat < y0;
        let within = x0.min(x1) <= p.lng && p.lng <= x0.max(x1) && y0.min(y1) <= p.lat && p.lat <= y0.max(y1);
        if !(up || down || within) {
            continue;
        }
        let o = RobustKernel::orient2d(Coord { x: x0, y: y0 }, Coord { x: x1, y: y1 }, c);
        if o == Orientation::Collinear && within {
            return None;
        }
        if (up && o == Orientation::CounterClockwise) || (down && o == Orientation::Clockwise) {
            inside = !inside;
        }
    }
    Some(inside)
}

/// Whether edge `e` shares a point with box `b` (edges and corners
/// included), exactly: an end inside, or a crossing or touching of a side.
pub fn edge_meets_box(e: Edge, b: &BBox) -> bool {
    let [x0, y0, x1, y1] = e;
    if b.contains(Point { lng: x0, lat: y0 }) || b.contains(Point { lng: x1, lat: y1 }) {
        return true;
    }
    if x0.max(x1) < b.west || x0.min(x1) > b.east || y0.max(y1) < b.south || y0.min(y1) > b.north {
        return false;
    }
    let corners =
        [(b.west, b.south), (b.east, b.south), (b.east, b.north), (b.west, b.north)].map(|(x, y)| Coord { x, y });
    (0..4).any(|i| segments_meet(Coord { x: x0, y: y0 }, Coord { x: x1, y: y1 }, corners[i], corners[(i + 1) % 4]))
}

/// Whether segments `a`–`b` and `p`–`q` share a point (exact).
fn segments_meet(a: Coord<f64>, b: Coord<f64>, p: Coord<f64>, q: Coord<f64>) -> bool {
    let o = |x, y, z| RobustKernel::orient2d(x, y, z);
    let (o1, o2, o3, o4) = (o(a, b, p), o(a, b, q), o(p, q, a), o(p, q, b));
    let on = |s: Coord<f64>, t: Coord<f64>, c: Coord<f64>| {
        s.x.min(t.x) <= c.x && c.x <= s.x.max(t.x) && s.y.min(t.y) <= c.y && c.y <= s.y.max(t.y)
    };
    let col = Orientation::Collinear;
    (o1 != o2 && o3 != o4 && o1 != col && o2 != col && o3 != col && o4 != col)
        || (o1 == col && on(a, b, p))
        || (o2 == col && on(a, b, q))
        || (o3 == col && on(p, q, a))
        || (o4 == col && on(p, q, b))
}

/// A monotone map from a coordinate to one of `n` cells over `[lo, hi]`.
#[derive(Debug, Clone, Copy)]
pub struct Axis {
    lo: f64,
    scale: f64,
    pub n: usize,
}

impl Axis {
    pub fn new(lo: f64, hi: f64, n: usize) -> Axis {
        let n = n.max(1);
        let span = hi - lo;
        Axis { lo, scale: if span > 0.0 { n as f64 / span } else { 0.0 }, n }
    }
    #[inline]
    pub fn cell(&self, v: f64) -> usize {
        // `as` saturates (and maps NaN to 0); `min` keeps the top edge in.
        (((v - self.lo) * self.scale) as usize).min(self.n - 1)
    }
    /// Where cell `i` starts (cell `n` is the upper end), as computed: a
    /// caller that needs the cell to hold every point it maps widens it.
    pub fn start(&self, i: usize) -> f64 {
        if self.scale == 0.0 { self.lo } else { self.lo + i as f64 / self.scale }
    }
    fn centre(&self, i: usize) -> f64 {
        if self.scale == 0.0 { self.lo } else { self.lo + (i as f64 + 0.5) / self.scale }
    }
}

/// The cells (row by row) of the grid `x` × `y`: [`BOUNDARY`] where an
/// edge's box touches, else [`INSIDE`] or [`OUTSIDE`] by `inside` at the
/// centre of the first cell of each run in a row (a centre that rounds
/// into another cell leaves its cell marked boundary).
pub fn classify(edges: &[Edge], x: Axis, y: Axis, inside: impl Fn(Point) -> bool) -> Vec<u8> {
    let mut cells = vec![OUTSIDE; x.n * y.n];
    for &[x0, y0, x1, y1] in edges {
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
            cells[i] = *state.get_or_insert_with(|| {
                let p = Point { lng: x.centre(c), lat: y.centre(r) };
                if x.cell(p.lng) != c || y.cell(p.lat) != r {
                    BOUNDARY
                } else if inside(p) {
                    INSIDE
                } else {
                    OUTSIDE
                }
            });
        }
    }
    cells
}

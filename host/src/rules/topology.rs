//! Is a polygon value one region the matcher can trust? Refused: a ring of
//! fewer than 3 distinct positions; two edges that cross (at a point inside
//! both) or overlap along a line — within a ring (a self-intersection),
//! between the rings of a polygon, or between the polygons of a
//! multipolygon; a hole outside its shell or inside another hole; a polygon
//! inside another. Touching at a point is allowed, as the OGC rules allow it.
//!
//! `geo`'s validation tests every pair of edges of a ring (6 s for 1,000
//! polygons of 1,000 vertices, a second per 10,000-vertex country); here the
//! pairs come from an R-tree of the edges' boxes, and orientation is `geo`'s
//! exact predicate.

use geo::kernels::{Kernel, Orientation, RobustKernel};
use geo::{Coord, MultiPolygon};
use rstar::primitives::{GeomWithData, Rectangle};
use rstar::{AABB, RTree};

use super::grid::{self, Edge};
use crate::post::Point;

/// Where an edge is: polygon, ring (0 the shell), edge.
#[derive(Debug, Clone, Copy, PartialEq)]
struct At {
    polygon: usize,
    ring: usize,
    edge: usize,
}

fn ring_name(ring: usize) -> String {
    if ring == 0 { "outer ring".to_owned() } else { format!("hole {ring}") }
}

/// Check `polys`; the first problem, in words, naming polygon and ring.
pub fn check(polys: &MultiPolygon<f64>) -> Result<(), String> {
    let mut edges: Vec<(At, Edge)> = Vec::new();
    for (pi, p) in polys.0.iter().enumerate() {
        for (ri, ring) in std::iter::once(p.exterior()).chain(p.interiors()).enumerate() {
            let mut distinct: Vec<(u64, u64)> = ring.coords().map(|c| (c.x.to_bits(), c.y.to_bits())).collect();
            distinct.sort_unstable();
            distinct.dedup();
            if distinct.len() < 3 {
                return Err(format!("polygon {pi}, {}: fewer than 3 distinct positions", ring_name(ri)));
            }
            for (ei, l) in ring.lines().enumerate() {
                if l.start != l.end {
                    edges.push((At { polygon: pi, ring: ri, edge: ei }, [l.start.x, l.start.y, l.end.x, l.end.y]));
                }
            }
        }
    }
    crossings(&edges)?;
    nesting(polys)
}

/// No two edges cross or overlap along a line.
fn crossings(edges: &[(At, Edge)]) -> Result<(), String> {
    let boxes = |e: &Edge| ([e[0].min(e[2]), e[1].min(e[3])], [e[0].max(e[2]), e[1].max(e[3])]);
    let tree = RTree::bulk_load(
        edges
            .iter()
            .enumerate()
            .map(|(i, (_, e))| {
                let (lo, hi) = boxes(e);
                GeomWithData::new(Rectangle::from_corners(lo, hi), i)
            })
            .collect(),
    );
    for (i, (a, e)) in edges.iter().enumerate() {
        let (lo, hi) = boxes(e);
        for hit in tree.locate_in_envelope_intersecting(&AABB::from_corners(lo, hi)) {
            let j = hit.data;
            if j <= i || !cross(e, &edges[j].1) {
                continue;
            }
            let b = edges[j].0;
            return Err(if a.polygon != b.polygon {
                format!("polygons {} and {} overlap (their edges cross)", a.polygon, b.polygon)
            } else if a.ring != b.ring {
                format!("polygon {}: its {} and {} cross", a.polygon, ring_name(a.ring), ring_name(b.ring))
            } else {
                format!(
                    "polygon {}, {}: self-intersection (edges {} and {} cross)",
                    a.polygon,
                    ring_name(a.ring),
                    a.edge,
                    b.edge
                )
            });
        }
    }
    Ok(())
}

/// Two edges share a point inside both, or more than one point.
fn cross(e: &Edge, f: &Edge) -> bool {
    let c = |k: &Edge, i: usize| Coord { x: k[2 * i], y: k[2 * i + 1] };
    let (a, b, p, q) = (c(e, 0), c(e, 1), c(f, 0), c(f, 1));
    let o = |x, y, z| RobustKernel::orient2d(x, y, z);
    let (o1, o2, o3, o4) = (o(a, b, p), o(a, b, q), o(p, q, a), o(p, q, b));
    let opposite = |u: Orientation, v: Orientation| {
        matches!(
            (u, v),
            (Orientation::Clockwise, Orientation::CounterClockwise)
                | (Orientation::CounterClockwise, Orientation::Clockwise)
        )
    };
    if opposite(o1, o2) && opposite(o3, o4) {
        return true;
    }
    if o1 == Orientation::Collinear && o2 == Orientation::Collinear {
        // On one line: overlapping by more than a point, along the longer axis.
        let by_x = (a.x - b.x).abs() >= (a.y - b.y).abs();
        let k = |c: Coord<f64>| if by_x { c.x } else { c.y };
        let (lo, hi) = (k(a).min(k(b)).max(k(p).min(k(q))), k(a).max(k(b)).min(k(p).max(k(q))));
        return lo < hi;
    }
    false
}

/// A point of `ring` that is not on `other`'s edges, inside them or not.
fn side(ring: &geo::LineString<f64>, other: &[Edge]) -> Option<bool> {
    ring.coords().find_map(|c| grid::parity(other.iter().copied(), Point { lng: c.x, lat: c.y }))
}

/// Holes inside their shell and not inside each other; no polygon inside another.
fn nesting(polys: &MultiPolygon<f64>) -> Result<(), String> {
    let shells: Vec<Vec<Edge>> =
        polys.0.iter().map(|p| grid::edges(&geo::Polygon::new(p.exterior().clone(), vec![]))).collect();
    for (pi, p) in polys.0.iter().enumerate() {
        let holes: Vec<Vec<Edge>> =
            p.interiors().iter().map(|h| grid::edges(&geo::Polygon::new(h.clone(), vec![]))).collect();
        for (hi, h) in p.interiors().iter().enumerate() {
            if side(h, &shells[pi]) == Some(false) {
                return Err(format!("polygon {pi}, hole {}: the interior ring lies outside the outer ring", hi + 1));
            }
            for (hj, other) in holes.iter().enumerate() {
                if hj != hi && side(h, other) == Some(true) {
                    return Err(format!("polygon {pi}: hole {} lies inside hole {}", hi + 1, hj + 1));
                }
            }
        }
    }
    let envelopes: Vec<_> = polys.0.iter().map(grid::envelope).collect();
    for (a, pa) in polys.0.iter().enumerate() {
        for (b, pb) in polys.0.iter().enumerate() {
            let near = matches!((envelopes[a], envelopes[b]), (Some(x), Some(y)) if x.overlaps(&y));
            if a != b && near && side(pa.exterior(), &grid::edges(pb)) == Some(true) {
                return Err(format!("polygons {a} and {b} overlap (polygon {a} lies inside polygon {b})"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::rules::geometry::{DEFAULT_MAX_BOXES, parse_shape};

    fn err(v: &str) -> String {
        parse_shape(v, DEFAULT_MAX_BOXES).expect_err("refused").0
    }

    #[test]
    fn what_is_refused_and_why() {
        assert!(
            err("POLYGON((0 0, 2 2, 2 0, 0 2, 0 0))").contains("outer ring: self-intersection (edges 0 and 2 cross)")
        );
        // A spike: back along the edge it came.
        assert!(err("POLYGON((0 0, 4 0, 4 4, 4 2, 4 6, 0 4, 0 0))").contains("self-intersection"));
        assert!(
            err("POLYGON((0 0, 9 0, 9 9, 0 9, 0 0), (8 1, 12 1, 12 2, 8 2, 8 1))")
                .contains("outer ring and hole 1 cross")
        );
        assert!(
            err("POLYGON((0 0, 9 0, 9 9, 0 9, 0 0), (1 1, 6 1, 6 6, 1 6, 1 1), (2 2, 3 2, 3 3, 2 3, 2 2))")
                .contains("hole 2 lies inside hole 1")
        );
        assert!(
            err("MULTIPOLYGON(((0 0, 9 0, 9 9, 0 9, 0 0)), ((1 1, 2 1, 2 2, 1 2, 1 1)))")
                .contains("polygon 1 lies inside polygon 0")
        );
        assert!(
            err("MULTIPOLYGON(((0 0, 1 0, 1 1, 0 1, 0 0)), ((1 0, 2 0, 2 1, 1 1, 1 0)))").contains("overlap"),
            "a shared edge"
        );
        assert!(
            err("POLYGON((0 0, 1 1, 2 2, 0 0))").contains("fewer than 3 distinct")
                || err("POLYGON((0 0, 1 1, 2 2, 0 0))").contains("cross")
        );
    }

    #[test]
    fn what_is_allowed() {
        for v in [
            // A hole touching the shell at one point; parts touching at a corner.
            "POLYGON((0 0, 4 0, 4 4, 0 4, 0 0), (0 2, 2 1, 2 3, 0 2))",
            "MULTIPOLYGON(((0 0, 1 0, 1 1, 0 1, 0 0)), ((1 1, 2 1, 2 2, 1 2, 1 1)))",
            // Repeated positions and straight runs.
            "POLYGON((0 0, 1 0, 1 0, 2 0, 2 2, 0 2, 0 0))",
            "POLYGON((0 0, 4 0, 4 4, 0 4, 0 0), (1 1, 2 1, 2 2, 1 2, 1 1), (2.5 2.5, 3 2.5, 3 3, 2.5 2.5))",
        ] {
            parse_shape(v, DEFAULT_MAX_BOXES).unwrap_or_else(|e| panic!("{v}: {e}"));
        }
    }
}

use super::*;
use crate::rules::geometry::{DEFAULT_MAX_BOXES, parse_shape};
use geo::{Coord, Intersects};
use proptest::prelude::*;

fn index(values: &[&str]) -> PolygonIndex {
    PolygonIndex::new(
        values
            .iter()
            .enumerate()
            .map(|(i, v)| (Arc::new(parse_shape(v, DEFAULT_MAX_BOXES).expect("valid")), i as RuleIdx))
            .collect(),
    )
}

fn at(ix: &PolygonIndex, lng: f64, lat: f64) -> Vec<RuleIdx> {
    let mut out = Vec::new();
    ix.at_point(Point { lng, lat }, &mut out);
    out.sort_unstable();
    out
}

fn place(ix: &PolygonIndex, west: f64, south: f64, east: f64, north: f64) -> Vec<RuleIdx> {
    let mut out = Vec::new();
    ix.overlapping(&BBox { west, south, east, north }, &mut out);
    out
}

const DONUT: &str = "POLYGON((0 0, 10 0, 10 10, 0 10, 0 0), (4 4, 6 4, 6 6, 4 6, 4 4))";

#[test]
fn points_inside_on_the_boundary_and_in_the_hole() {
    let ix = index(&[DONUT]);
    assert_eq!(at(&ix, 2.0, 2.0), [0]);
    assert_eq!(at(&ix, 5.0, 5.0), [] as [RuleIdx; 0], "in the hole");
    assert_eq!(at(&ix, 0.0, 5.0), [0], "on the shell's edge");
    assert_eq!(at(&ix, 10.0, 10.0), [0], "on a corner");
    assert_eq!(at(&ix, 4.0, 5.0), [0], "on the hole's edge");
    assert_eq!(at(&ix, 6.0, 6.0), [0], "on the hole's corner");
    assert_eq!(at(&ix, 10.000001, 5.0), [] as [RuleIdx; 0]);
    assert_eq!(at(&ix, f64::NAN, 5.0), [] as [RuleIdx; 0]);
    let mut out = Vec::new();
    assert!(ix.at_point(Point { lng: 5.0, lat: 5.0 }, &mut out), "in the envelope, outside the polygon");
    assert!(!ix.at_point(Point { lng: 50.0, lat: 5.0 }, &mut out), "not even in the envelope");
}

#[test]
fn place_boxes_that_touch_cross_or_sit_in_a_hole() {
    let ix = index(&[DONUT]);
    assert_eq!(place(&ix, 10.0, 2.0, 12.0, 3.0), [0], "touches the shell's edge");
    assert_eq!(place(&ix, 10.0, 10.0, 11.0, 11.0), [0], "touches a corner");
    assert_eq!(place(&ix, 9.0, 2.0, 12.0, 3.0), [0], "crosses the shell");
    assert_eq!(place(&ix, 4.5, 4.5, 5.5, 5.5), [] as [RuleIdx; 0], "inside the hole");
    assert_eq!(place(&ix, 4.0, 4.5, 5.5, 5.5), [0], "touches the hole's edge");
    assert_eq!(place(&ix, 3.0, 3.0, 7.0, 7.0), [0], "holds the hole");
    assert_eq!(place(&ix, -5.0, -5.0, 15.0, 15.0), [0], "holds the polygon");
    assert_eq!(place(&ix, 11.0, 0.0, 12.0, 1.0), [] as [RuleIdx; 0]);
}

#[test]
fn a_multipolygon_split_at_the_antimeridian() {
    let fiji = "MULTIPOLYGON(((178 -18, 180 -18, 180 -16, 178 -16, 178 -18)), ((-180 -18, -179 -18, -179 -16, -180 -16, -180 -18)))";
    let ix = index(&[fiji]);
    assert_eq!(at(&ix, 179.5, -17.0), [0]);
    assert_eq!(at(&ix, -179.5, -17.0), [0]);
    assert_eq!(at(&ix, 180.0, -17.0), [0]);
    assert_eq!(at(&ix, -180.0, -17.0), [0]);
    assert_eq!(at(&ix, 0.0, -17.0), [] as [RuleIdx; 0], "not the other way round the globe");
    assert_eq!(place(&ix, -179.9, -17.5, -179.8, -17.4), [0]);
}

/// Exact ray casting on integers (coordinates scaled by 4): the reference.
fn naive(rings: &[Vec<(i64, i64)>], (px, py): (i64, i64)) -> bool {
    let mut inside = false;
    for ring in rings {
        for w in ring.windows(2) {
            let ((ax, ay), (bx, by)) = (w[0], w[1]);
            let cross = i128::from(bx - ax) * i128::from(py - ay) - i128::from(by - ay) * i128::from(px - ax);
            if cross == 0 && ax.min(bx) <= px && px <= ax.max(bx) && ay.min(by) <= py && py <= ay.max(by) {
                return true;
            }
            if (ay > py) != (by > py) {
                // x of the edge at py, compared without division.
                let lhs = i128::from(px - ax) * i128::from(by - ay);
                let rhs = i128::from(bx - ax) * i128::from(py - ay);
                if (by > ay && lhs < rhs) || (by < ay && lhs > rhs) {
                    inside = !inside;
                }
            }
        }
    }
    inside
}

/// A star around (cx, cy) on the integer grid, with a square hole.
fn star(cx: i64, cy: i64, radii: &[i64], hole: i64) -> Vec<Vec<(i64, i64)>> {
    let n = radii.len();
    let mut shell: Vec<(i64, i64)> = radii
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let a = std::f64::consts::TAU * i as f64 / n as f64;
            (cx + (*r as f64 * a.cos()).round() as i64, cy + (*r as f64 * a.sin()).round() as i64)
        })
        .collect();
    shell.dedup();
    shell.push(shell[0]);
    let mut rings = vec![shell];
    if hole > 0 {
        rings.push(vec![
            (cx - hole, cy - hole),
            (cx + hole, cy - hole),
            (cx + hole, cy + hole),
            (cx - hole, cy + hole),
            (cx - hole, cy - hole),
        ]);
    }
    rings
}

fn wkt(rings: &[Vec<(i64, i64)>]) -> String {
    let r: Vec<String> = rings
        .iter()
        .map(|ring| format!("({})", ring.iter().map(|(x, y)| format!("{x} {y}")).collect::<Vec<_>>().join(", ")))
        .collect();
    format!("POLYGON({})", r.join(", "))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, rng_seed: proptest::test_runner::RngSeed::Fixed(28), ..ProptestConfig::default() })]
    /// The index answers as naive ray casting and as `geo`, on a grid where
    /// points on edges, on vertices and in holes are common; with one polygon
    /// (scan) and with the same polygon among 40 others (buckets).
    #[test]
    fn the_index_answers_as_ray_casting_and_geo(
        radii in proptest::collection::vec(4i64..40, 3..48),
        hole in 0i64..3,
        points in proptest::collection::vec((-170i64..170, -170i64..170), 50..200),
    ) {
        let rings = star(0, 0, &radii, hole);
        let text = wkt(&rings);
        let Ok(shape) = parse_shape(&text, DEFAULT_MAX_BOXES) else {
            // Rounding to the grid made the star invalid: refused, not indexed.
            return Ok(());
        };
        let shape = Arc::new(shape);
        let alone = PolygonIndex::new(vec![(Arc::clone(&shape), 0)]);
        let mut many: Vec<(Arc<Shape>, RuleIdx)> = (1..=40)
            .map(|i| {
                let x = -170 + i * 4;
                let v = format!("POLYGON(({x} 60, {} 60, {} 62, {x} 60))", x + 2, x + 2);
                (Arc::new(parse_shape(&v, DEFAULT_MAX_BOXES).expect("valid")), i as RuleIdx)
            })
            .collect();
        many.push((Arc::clone(&shape), 0));
        let many = PolygonIndex::new(many);
        prop_assert!(many.buckets.is_some());
        let poly = &shape.polygons().0[0];
        let scaled: Vec<Vec<(i64, i64)>> = rings.iter().map(|r| r.iter().map(|(x, y)| (x * 4, y * 4)).collect()).collect();
        for (qx, qy) in points {
            // Quarter-grid points: a quarter of them on the integer grid.
            let (lng, lat) = (qx as f64 / 4.0, qy as f64 / 4.0);
            let want = naive(&scaled, (qx, qy));
            prop_assert_eq!(want, poly.intersects(&Coord { x: lng, y: lat }), "geo disagrees at ({}, {})", lng, lat);
            prop_assert_eq!(at(&alone, lng, lat) == [0], want, "at ({}, {})", lng, lat);
            prop_assert_eq!(at(&many, lng, lat).contains(&0), want, "buckets at ({}, {})", lng, lat);
            // Places: the buckets find what the scan finds, each rule once.
            let (alone_hits, mut many_hits) = (place(&alone, lng, lat, lng + 0.75, lat + 0.5), place(&many, lng, lat, lng + 0.75, lat + 0.5));
            prop_assert_eq!(alone_hits == [0], many_hits.contains(&0));
            let rect = geo::Rect::new(Coord { x: lng, y: lat }, Coord { x: lng + 0.75, y: lat + 0.5 });
            prop_assert_eq!(alone_hits == [0], rect.intersects(poly), "place at ({}, {}) against geo", lng, lat);
            let n = many_hits.len();
            many_hits.sort_unstable();
            many_hits.dedup();
            prop_assert_eq!(n, many_hits.len(), "a part reported twice");
        }
    }
}

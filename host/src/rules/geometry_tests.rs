use super::*;

fn shape(v: &str) -> Result<Shape, BadShape> {
    parse_shape(v, DEFAULT_MAX_BOXES)
}

fn err(v: &str) -> String {
    shape(v).expect_err("refused").0
}

#[test]
fn geojson_and_wkt_read_the_same_polygon_with_its_hole() {
    let j = shape(
        r#"{"type":"Polygon","coordinates":[[[0,0],[10,0],[10,10],[0,10],[0,0]],[[4,4],[6,4],[6,6],[4,6],[4,4]]]}"#,
    )
    .expect("valid");
    let w = shape("POLYGON ((0 0, 10 0, 10 10, 0 10, 0 0), (4 4, 6 4, 6 6, 4 6, 4 4))").expect("valid");
    assert_eq!(j, w);
    assert_eq!(j.vertices(), 10);
    assert_eq!(j.envelope(), BBox { west: 0.0, south: 0.0, east: 10.0, north: 10.0 });
    assert_eq!(j.polygons().0[0].interiors().len(), 1);
}

#[test]
fn the_forms_people_write_are_read() {
    for v in [
        r#"{"type":"Feature","properties":{"name":"x"},"geometry":{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,0]]]}}"#,
        r#"{"type":"MultiPolygon","coordinates":[[[[0,0],[1,0],[1,1],[0,0]]],[[[5,5],[6,5],[6,6],[5,5]]]]}"#,
        r#"{"coordinates":[[[0,0,12.5],[1,0,3],[1,1,0],[0,0,12.5]]],"type":"Polygon"}"#,
        "polygon((0 0,1 0,1 1,0 0))",
        "POLYGON Z ((0 0 1, 1 0 1, 1 1 1, 0 0 1))",
        "SRID=4326;POLYGON((0 0, 1 0, 1 1, 0 0))",
        "MULTIPOLYGON (((0 0, 1 0, 1 1, 0 0)), ((5 5, 6 5, 6 6, 5 5)))",
        "  POLYGON((0 0, 1e0 0, 1 1, -0.0 0))  ",
    ] {
        assert!(is_polygon(v), "{v}");
        shape(v).unwrap_or_else(|e| panic!("{v}: {e}"));
    }
    assert!(!is_polygon("-122.75,36.8,-121.75,37.8"));
}

#[test]
fn a_ring_that_is_not_closed_is_refused() {
    assert!(err("POLYGON((0 0, 1 0, 1 1, 0 1))").contains("not closed"), "{}", err("POLYGON((0 0, 1 0, 1 1, 0 1))"));
}

#[test]
fn a_ring_of_fewer_than_4_positions_is_refused() {
    assert!(err("POLYGON((0 0, 1 0, 0 0))").contains("at least 4"));
    assert!(err(r#"{"type":"Polygon","coordinates":[[]]}"#).contains("0 positions"));
}

#[test]
fn a_self_intersecting_ring_is_refused() {
    // A bow tie.
    let e = err("POLYGON((0 0, 2 2, 2 0, 0 2, 0 0))");
    assert!(e.contains("self-intersection"), "{e}");
}

#[test]
fn positions_outside_the_globe_are_refused() {
    assert!(err("POLYGON((170 0, 181 0, 181 1, 170 0))").contains("longitude 181 outside"));
    assert!(err("POLYGON((0 80, 1 80, 1 91, 0 80))").contains("latitude 91 outside"));
    assert!(err(r#"{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1e999],[0,0]]]}"#).contains("GeoJSON"));
}

#[test]
fn the_antimeridian_takes_a_multipolygon_split_at_180() {
    // Fiji-like: one shape written across 180° is refused…
    let e = err("POLYGON((178 -18, -179 -18, -179 -16, 178 -16, 178 -18))");
    assert!(e.contains("antimeridian"), "{e}");
    // …and accepted as two parts that meet at ±180.
    let s = shape("MULTIPOLYGON(((178 -18, 180 -18, 180 -16, 178 -16, 178 -18)), ((-180 -18, -179 -18, -179 -16, -180 -16, -180 -18)))")
        .expect("valid");
    assert_eq!(s.polygons().0.len(), 2);
}

#[test]
fn a_hole_outside_its_shell_and_overlapping_parts_are_refused() {
    let e = err("POLYGON((0 0, 1 0, 1 1, 0 1, 0 0), (5 5, 6 5, 6 6, 5 5))");
    assert!(e.contains("interior"), "{e}");
    let e = err("MULTIPOLYGON(((0 0, 2 0, 2 2, 0 2, 0 0)), ((1 1, 3 1, 3 3, 1 3, 1 1)))");
    assert!(e.contains("overlap"), "{e}");
}

#[test]
fn broken_text_names_where() {
    assert!(err("POLYGON((0 0, 1 0, 1 x, 0 0))").contains("expected a number at character"));
    assert!(err("POLYGON((0 0, 1 0, 1 1, 0 0)) trailing").contains("unexpected text"));
    assert!(err("POLYGON EMPTY").contains("EMPTY"));
    assert!(err("SRID=3857;POLYGON((0 0, 1 0, 1 1, 0 0))").contains("SRID=4326"));
    assert!(err(r#"{"type":"Point","coordinates":[0,0]}"#).contains("expected Polygon or MultiPolygon"));
    assert!(err(r#"{"type":"Polygon","coordinates":[[[0,0],[1],[1,1],[0,0]]]}"#).contains("coordinates[0][1]"));
    assert!(err(r#"{"type":"Polygon""#).contains("not valid GeoJSON"));
}

#[test]
fn a_post_names_a_polygon_by_digest() {
    let v = "POLYGON((0 0, 1 0, 1 1, 0 0))";
    let r = reference(v, &shape(v).expect("valid"));
    assert!(r.starts_with("POLYGON sha256:") && r.len() == "POLYGON sha256:".len() + 16, "{r}");
    assert_ne!(r, reference("POLYGON((0 0, 2 0, 2 2, 0 0))", &shape("POLYGON((0 0, 2 0, 2 2, 0 0))").expect("valid")));
    let m = "MULTIPOLYGON(((0 0, 1 0, 1 1, 0 0)), ((5 5, 6 5, 6 6, 5 5)))";
    assert!(reference(m, &shape(m).expect("valid")).starts_with("MULTIPOLYGON sha256:"));
}

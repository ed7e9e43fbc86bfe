//! Polygon `locations` rules (DESIGN §4): a rule's `value` written as a
//! GeoJSON geometry (`Polygon`, `MultiPolygon`, or a `Feature` holding one)
//! or as WKT (`POLYGON(…)`, `MULTIPOLYGON(…)`), instead of boxes.
//!
//! Parsed and checked here, once, where the rule was written: every ring has
//! at least 4 positions and is closed, every position is a finite
//! longitude −180…180 and latitude −90…90, no edge jumps more than 180° of
//! longitude (a shape across the antimeridian must be a `MultiPolygon` split
//! at 180°), and no edges cross, no hole lies outside its shell and no parts
//! overlap (`topology.rs`). Pure: no I/O.
//!
//! Matching is `matcher/polygons.rs`; the boxes an API that takes only boxes
//! is given are `cover.rs`.

use std::sync::OnceLock;

use geo::{Coord, LineString, MultiPolygon, Polygon};
use serde_json::Value;

use super::cover::{Cover, cover};
use super::topology;
use crate::post::BBox;

/// Why a polygon value was refused; the rule's error names the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadShape(pub String);

fn bad<T>(reason: impl Into<String>) -> Result<T, BadShape> {
    Err(BadShape(reason.into()))
}

/// A checked polygon value: one or more polygons, holes allowed.
#[derive(Debug)]
pub struct Shape {
    polygons: MultiPolygon<f64>,
    envelope: BBox,
    vertices: usize,
    /// How many boxes the cover for box-only APIs may use (`max_boxes`).
    max_boxes: usize,
    cover: OnceLock<Cover>,
}

impl PartialEq for Shape {
    fn eq(&self, other: &Shape) -> bool {
        self.polygons == other.polygons && self.max_boxes == other.max_boxes
    }
}

/// Boxes a polygon's cover may use unless the rule says (`max_boxes`): two
/// polygons fit one v1.1 connection (25 boxes).
pub const DEFAULT_MAX_BOXES: usize = 12;

impl Shape {
    /// The polygons (shell first, then holes, in each).
    pub fn polygons(&self) -> &MultiPolygon<f64> {
        &self.polygons
    }
    /// The smallest box around every polygon.
    pub fn envelope(&self) -> BBox {
        self.envelope
    }
    /// Positions written, closing ones included.
    pub fn vertices(&self) -> usize {
        self.vertices
    }
    /// One line for `validate` and `rules plan`.
    pub fn summary(&self) -> String {
        let c = self.cover();
        format!(
            "polygon of {} positions in {} part(s); covered for the v1.1 filter by {} box(es) (max_boxes {}), {:.1} % of the boxes' area outside the polygon",
            self.vertices,
            self.polygons.0.len(),
            c.boxes.len(),
            self.max_boxes,
            c.outside_share * 100.0
        )
    }
    /// The boxes sent to an API that takes only boxes (computed once).
    pub fn cover(&self) -> &Cover {
        self.cover.get_or_init(|| cover(&self.polygons, self.max_boxes))
    }
}

/// How a polygon rule's value appears in a post's `collection_rules`
/// entry: its kind (MULTIPOLYGON with several parts) and the SHA-256 of the value as written (first 16 hex
/// digits), e.g. `POLYGON sha256:9f86d081884c7d65` — not the geometry,
/// which can be kilobytes, in every post.
pub fn reference(value: &str, shape: &Shape) -> String {
    use sha2::{Digest, Sha256};
    let kind = if shape.polygons.0.len() > 1 { "MULTIPOLYGON" } else { "POLYGON" };
    let digest = Sha256::digest(value.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{kind} sha256:{hex}")
}

/// True when a `locations` value is written as a polygon, not as boxes.
pub fn is_polygon(value: &str) -> bool {
    let v = value.trim_start();
    v.starts_with('{') || v.get(..7).is_some_and(|p| p.eq_ignore_ascii_case("polygon")) || is_wkt_multi(v)
}

fn is_wkt_multi(v: &str) -> bool {
    v.get(..12).is_some_and(|p| p.eq_ignore_ascii_case("multipolygon"))
        || v.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("srid="))
}

/// Parse and check a polygon value; `max_boxes` bounds its cover (1…25).
pub fn parse_shape(value: &str, max_boxes: usize) -> Result<Shape, BadShape> {
    let v = value.trim();
    let rings = if v.starts_with('{') { geojson(v)? } else { wkt(v)? };
    build(rings, max_boxes)
}

/// Polygons as rings of positions, as written (shell, then holes).
type Rings = Vec<Vec<Vec<[f64; 2]>>>;

fn build(polys: Rings, max_boxes: usize) -> Result<Shape, BadShape> {
    if polys.is_empty() {
        return bad("no polygon");
    }
    let mut vertices = 0;
    let mut out = Vec::with_capacity(polys.len());
    for (pi, rings) in polys.into_iter().enumerate() {
        let mut lines = Vec::with_capacity(rings.len());
        for (ri, ring) in rings.into_iter().enumerate() {
            let at = ring_name(pi, ri);
            check_ring(&ring).map_err(|e| BadShape(format!("{at}: {}", e.0)))?;
            vertices += ring.len();
            lines.push(LineString::new(ring.into_iter().map(|[x, y]| Coord { x, y }).collect()));
        }
        let mut lines = lines.into_iter();
        let Some(shell) = lines.next() else { return bad(format!("polygon {pi} has no ring")) };
        out.push(Polygon::new(shell, lines.collect()));
    }
    let polygons = MultiPolygon::new(out);
    topology::check(&polygons).map_err(BadShape)?;
    let envelope = BBox::around(
        polygons.0.iter().flat_map(|p| p.exterior().coords()).map(|c| crate::post::Point { lng: c.x, lat: c.y }),
    )
    .ok_or_else(|| BadShape("no finite position".into()))?;
    Ok(Shape { polygons, envelope, vertices, max_boxes, cover: OnceLock::new() })
}

fn ring_name(polygon: usize, ring: usize) -> String {
    match ring {
        0 => format!("polygon {polygon}, outer ring"),
        h => format!("polygon {polygon}, hole {h}"),
    }
}

fn check_ring(ring: &[[f64; 2]]) -> Result<(), BadShape> {
    if ring.len() < 4 {
        return bad(format!("{} positions; a ring needs at least 4 (the last repeating the first)", ring.len()));
    }
    for (i, [x, y]) in ring.iter().enumerate() {
        if !x.is_finite() || !y.is_finite() {
            return bad(format!("position {i} is not finite"));
        }
        if !(-180.0..=180.0).contains(x) {
            return bad(format!("position {i}: longitude {x} outside -180..180"));
        }
        if !(-90.0..=90.0).contains(y) {
            return bad(format!("position {i}: latitude {y} outside -90..90"));
        }
    }
    if ring.first() != ring.last() {
        return bad("ring is not closed: its last position must repeat its first");
    }
    if let Some(i) = ring.windows(2).position(|w| (w[1][0] - w[0][0]).abs() > 180.0) {
        return bad(format!(
            "edge from position {i} to {} spans more than 180° of longitude: a shape across the antimeridian must be a MultiPolygon split at 180°",
            i + 1
        ));
    }
    Ok(())
}

/// GeoJSON: a `Polygon` or `MultiPolygon` geometry, or a `Feature` holding one.
fn geojson(text: &str) -> Result<Rings, BadShape> {
    let v: Value = serde_json::from_str(text).map_err(|e| BadShape(format!("not valid GeoJSON: {e}")))?;
    let v = match v.get("type").and_then(Value::as_str) {
        Some("Feature") => v.get("geometry").cloned().unwrap_or(Value::Null),
        _ => v,
    };
    let kind = v.get("type").and_then(Value::as_str).unwrap_or("");
    let coords = v.get("coordinates").ok_or_else(|| BadShape("GeoJSON geometry has no `coordinates`".into()))?;
    match kind {
        "Polygon" => Ok(vec![json_rings(coords, "coordinates")?]),
        "MultiPolygon" => {
            let polys =
                coords.as_array().ok_or_else(|| BadShape("`coordinates` must be an array of polygons".into()))?;
            polys.iter().enumerate().map(|(i, p)| json_rings(p, &format!("coordinates[{i}]"))).collect()
        }
        other => bad(format!("GeoJSON type {other:?}; expected Polygon or MultiPolygon (or a Feature holding one)")),
    }
}

fn json_rings(v: &Value, at: &str) -> Result<Vec<Vec<[f64; 2]>>, BadShape> {
    let rings = v.as_array().ok_or_else(|| BadShape(format!("`{at}` must be an array of rings")))?;
    rings
        .iter()
        .enumerate()
        .map(|(r, ring)| {
            let ring = ring.as_array().ok_or_else(|| BadShape(format!("`{at}[{r}]` must be an array of positions")))?;
            ring.iter()
                .enumerate()
                .map(|(i, p)| {
                    let n = |k: usize| p.get(k).and_then(Value::as_f64);
                    match (n(0), n(1)) {
                        (Some(x), Some(y)) => Ok([x, y]),
                        _ => bad(format!("`{at}[{r}][{i}]` must be a position [longitude, latitude]")),
                    }
                })
                .collect()
        })
        .collect()
}

/// WKT: `POLYGON((x y, …), (…))` or `MULTIPOLYGON(((…)), ((…)))`, with an
/// optional `SRID=4326;` prefix and `Z`/`M` coordinates (extra ordinates ignored).
fn wkt(text: &str) -> Result<Rings, BadShape> {
    let mut t = text;
    if t.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("srid=")) {
        let (srid, rest) = t.split_once(';').ok_or_else(|| BadShape("`SRID=…` must end with `;`".into()))?;
        if srid[5..].trim() != "4326" {
            return bad(format!("{srid}: only longitude/latitude (SRID=4326) is understood"));
        }
        t = rest.trim_start();
    }
    let word_end = t.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(t.len());
    let kind = t[..word_end].to_ascii_uppercase();
    let mut p = Wkt { s: t.as_bytes(), i: word_end };
    p.skip_dimension();
    let rings = match kind.as_str() {
        "POLYGON" => vec![p.polygon()?],
        "MULTIPOLYGON" => p.list(Wkt::polygon)?,
        _ => return bad(format!("WKT {kind:?}; expected POLYGON or MULTIPOLYGON")),
    };
    p.ws();
    if p.i < p.s.len() {
        return bad(format!("unexpected text at character {} of the WKT", p.i));
    }
    Ok(rings)
}

struct Wkt<'a> {
    s: &'a [u8],
    i: usize,
}

impl Wkt<'_> {
    fn ws(&mut self) {
        while self.s.get(self.i).is_some_and(u8::is_ascii_whitespace) {
            self.i += 1;
        }
    }
    fn skip_dimension(&mut self) {
        self.ws();
        for d in ["ZM", "Z", "M"] {
            if self.s[self.i..].get(..d.len()).is_some_and(|w| w.eq_ignore_ascii_case(d.as_bytes())) {
                self.i += d.len();
                return;
            }
        }
    }
    fn eat(&mut self, c: u8) -> Result<(), BadShape> {
        self.ws();
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            Ok(())
        } else if self.s[self.i..].get(..5).is_some_and(|w| w.eq_ignore_ascii_case(b"EMPTY")) {
            bad("an EMPTY geometry matches nothing")
        } else {
            bad(format!("expected {:?} at character {} of the WKT", char::from(c), self.i))
        }
    }
    /// `( item, item, … )`
    fn list<T>(&mut self, mut item: impl FnMut(&mut Self) -> Result<T, BadShape>) -> Result<Vec<T>, BadShape> {
        self.eat(b'(')?;
        let mut out = vec![item(self)?];
        loop {
            self.ws();
            match self.s.get(self.i) {
                Some(b',') => {
                    self.i += 1;
                    out.push(item(self)?);
                }
                _ => break,
            }
        }
        self.eat(b')')?;
        Ok(out)
    }
    fn polygon(&mut self) -> Result<Vec<Vec<[f64; 2]>>, BadShape> {
        self.list(|p| p.list(Wkt::position))
    }
    fn position(&mut self) -> Result<[f64; 2], BadShape> {
        let x = self.number()?;
        let y = self.number()?;
        // Z and M ordinates, when written, are read and ignored.
        loop {
            self.ws();
            match self.s.get(self.i) {
                Some(b',' | b')') | None => return Ok([x, y]),
                _ => {
                    self.number()?;
                }
            }
        }
    }
    fn number(&mut self) -> Result<f64, BadShape> {
        self.ws();
        let start = self.i;
        while self.s.get(self.i).is_some_and(|b| b.is_ascii_digit() || b"+-.eE".contains(b)) {
            self.i += 1;
        }
        std::str::from_utf8(&self.s[start..self.i])
            .ok()
            .and_then(|n| n.parse::<f64>().ok())
            .ok_or_else(|| BadShape(format!("expected a number at character {start} of the WKT")))
    }
}

#[cfg(test)]
#[path = "geometry_tests.rs"]
mod tests;

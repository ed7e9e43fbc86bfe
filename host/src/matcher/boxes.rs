//! Location rules: boxes tested against a post's point, else its place's box.
//!
//! Up to [`SCAN_MAX`] boxes a scan is fastest. Beyond, an R-tree (`rstar`)
//! finds the candidate boxes whose envelope touches the point or the place,
//! and the scan's exact test ([`BBox::overlaps`], edges included; a point is
//! a box of one point) decides — so the answer is the scan's,
//! whatever the tree's own rounding.

use rstar::primitives::{GeomWithData, Rectangle};
use rstar::{AABB, RTree};

use super::RuleIdx;
use crate::post::{BBox, Point};

/// Below this many boxes, a linear scan.
const SCAN_MAX: usize = 64;

type Entry = GeomWithData<Rectangle<[f64; 2]>, u32>;

/// The boxes of every location rule.
#[derive(Debug, Default)]
pub struct BoxIndex {
    boxes: Vec<(BBox, RuleIdx)>,
    tree: Option<RTree<Entry>>,
}

/// Usable as a tree query: finite coordinates only.
fn finite(v: [f64; 4]) -> bool {
    v.iter().all(|x| x.is_finite())
}

impl BoxIndex {
    pub fn new(boxes: Vec<(BBox, RuleIdx)>) -> BoxIndex {
        let tree = (boxes.len() > SCAN_MAX).then(|| {
            let entries = boxes
                .iter()
                .enumerate()
                .filter(|(_, (b, _))| finite([b.west, b.south, b.east, b.north]))
                .map(|(i, (b, _))| {
                    GeomWithData::new(Rectangle::from_corners([b.west, b.south], [b.east, b.north]), i as u32)
                })
                .collect();
            RTree::bulk_load(entries)
        });
        BoxIndex { boxes, tree }
    }

    pub fn is_empty(&self) -> bool {
        self.boxes.is_empty()
    }

    /// The rules whose box holds `p`: the boxes that share a point with the
    /// box of that one point (the same comparisons as [`BBox::contains`]).
    pub fn at_point(&self, p: Point, out: &mut Vec<RuleIdx>) {
        self.overlapping(&BBox { west: p.lng, south: p.lat, east: p.lng, north: p.lat }, out);
    }

    /// The rules whose box shares a point with `place`.
    pub fn overlapping(&self, place: &BBox, out: &mut Vec<RuleIdx>) {
        let hits = |(b, r): &(BBox, RuleIdx)| b.overlaps(place).then_some(*r);
        match &self.tree {
            Some(t) if finite([place.west, place.south, place.east, place.north]) => {
                let q = AABB::from_corners([place.west, place.south], [place.east, place.north]);
                out.extend(t.locate_in_envelope_intersecting(&q).filter_map(|e| hits(&self.boxes[e.data as usize])));
            }
            _ => out.extend(self.boxes.iter().filter_map(hits)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn scan(boxes: &[(BBox, RuleIdx)], f: impl Fn(&BBox) -> bool) -> Vec<RuleIdx> {
        let mut v: Vec<RuleIdx> = boxes.iter().filter(|(b, _)| f(b)).map(|(_, r)| *r).collect();
        v.sort_unstable();
        v
    }

    fn sorted(mut v: Vec<RuleIdx>) -> Vec<RuleIdx> {
        v.sort_unstable();
        v
    }

    fn bbox() -> impl Strategy<Value = BBox> {
        // Small integers make shared edges and corners common.
        (-20i32..20, -20i32..20, 0i32..6, 0i32..6).prop_map(|(w, s, dx, dy)| BBox {
            west: f64::from(w),
            south: f64::from(s),
            east: f64::from(w + dx),
            north: f64::from(s + dy),
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, rng_seed: proptest::test_runner::RngSeed::Fixed(15), ..ProptestConfig::default() })]
        /// The tree gives exactly the scan's answer, edges and corners included.
        #[test]
        fn the_tree_answers_as_the_scan(
            boxes in proptest::collection::vec(bbox(), 65..300),
            points in proptest::collection::vec((-22i32..22, -22i32..22), 1..40),
            places in proptest::collection::vec(bbox(), 1..20),
        ) {
            let boxes: Vec<(BBox, RuleIdx)> = boxes.into_iter().enumerate().map(|(i, b)| (b, i as RuleIdx)).collect();
            let index = BoxIndex::new(boxes.clone());
            prop_assert!(index.tree.is_some());
            for (x, y) in points {
                let p = Point { lng: f64::from(x), lat: f64::from(y) };
                let mut got = Vec::new();
                index.at_point(p, &mut got);
                prop_assert_eq!(sorted(got), scan(&boxes, |b| b.contains(p)));
            }
            for place in places {
                let mut got = Vec::new();
                index.overlapping(&place, &mut got);
                prop_assert_eq!(sorted(got), scan(&boxes, |b| b.overlaps(&place)));
            }
        }
    }

    #[test]
    fn a_point_that_is_not_a_number_matches_nothing() {
        let boxes: Vec<(BBox, RuleIdx)> =
            (0..100).map(|i| (BBox { west: -180.0, south: -90.0, east: 180.0, north: 90.0 }, i)).collect();
        let index = BoxIndex::new(boxes);
        let mut got = Vec::new();
        index.at_point(Point { lng: f64::NAN, lat: 0.0 }, &mut got);
        assert!(got.is_empty());
    }
}

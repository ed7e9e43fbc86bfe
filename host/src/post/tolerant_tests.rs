//! Tests of `tolerant.rs`.

use super::*;

tolerant! {
    struct Inner<'a> in "inner" {
        name: Cow<'a, str>,
        at: [f64; 2],
    }
}

tolerant! {
    struct Outer<'a> in "outer" {
        id: Id<'a>,
        count: u64,
        kind as "type": Cow<'a, str>,
        inner: Inner<'a>,
        list: Vec<Inner<'a>>,
        flag: Present,
    }
}

fn read(json: &str) -> (Outer<'_>, Vec<Surprise>) {
    let s = Surprises::default();
    let o = read_record::<Outer<'_>>(json, "outer", &s).expect("json").expect("object");
    (o, s.into_vec())
}

#[test]
fn expected_types_read_without_surprise() {
    let (o, s) =
        read(r#"{"id":"7","count":3,"type":"t","inner":{"name":"n","at":[1,2.5]},"list":[{"name":"a"}],"flag":{}}"#);
    assert!(s.is_empty(), "{s:?}");
    assert_eq!(o.id.as_ref().map(Id::as_str), Some("7"));
    assert_eq!(o.count, Some(3));
    assert_eq!(o.kind.as_deref(), Some("t"));
    let inner = o.inner.expect("inner");
    assert_eq!(inner.name.as_deref(), Some("n"));
    assert_eq!(inner.at, Some([1.0, 2.5]));
    assert_eq!(o.list.map(|l| l.len()), Some(1));
    assert_eq!(o.flag, Some(Present));
    assert!(o.present != 0);
}

#[test]
fn clear_meanings_are_converted_and_noted() {
    let (o, s) = read(r#"{"id":1377649934414049282,"count":"12","inner":{"at":["1.5",2]}}"#);
    assert_eq!(o.id.map(Id::into_cow).as_deref(), Some("1377649934414049282"));
    assert_eq!(o.count, Some(12));
    assert_eq!(o.inner.and_then(|i| i.at), Some([1.5, 2.0]));
    assert_eq!(
        s,
        vec![
            Surprise { field: "outer.id", converted: true },
            Surprise { field: "outer.count", converted: true },
            Surprise { field: "inner.at", converted: true },
        ]
    );
}

#[test]
fn unusable_values_are_absent_and_noted_and_the_rest_is_read() {
    let (o, s) = read(
        r#"{"count":true,"type":0,"inner":[1,{"a":2}],"list":{"x":[]},"id":"1","flag":null,"extra":{"deep":[1,2,{"x":null}]}}"#,
    );
    assert_eq!(o.id.as_ref().map(Id::as_str), Some("1"));
    assert!(o.count.is_none() && o.kind.is_none() && o.inner.is_none() && o.list.is_none());
    assert!(o.flag.is_none());
    assert!(o.has("flag") && o.has("type") && !o.has("nope"));
    let fields: Vec<&str> = s.iter().map(|s| s.field).collect();
    assert_eq!(fields, vec!["outer.count", "outer.type", "outer.inner", "outer.list"]);
    assert!(s.iter().all(|s| !s.converted));
}

#[test]
fn bad_list_items_are_left_out_and_short_tuples_refused() {
    let (o, s) = read(r#"{"list":[{"name":"a"},5,null,{"name":6}],"inner":{"at":[1]}}"#);
    let list = o.list.expect("list");
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].name.as_deref(), Some("a"));
    assert!(list[1].name.is_none());
    assert!(o.inner.expect("inner").at.is_none());
    assert_eq!(s.len(), 3, "{s:?}");
}

#[test]
fn duplicate_keys_last_wins_and_escapes_are_owned() {
    let (o, s) = read(r#"{"type":"a","type":"b\u00e9","id":"\ud83d\ude00"}"#);
    assert!(s.is_empty());
    assert_eq!(o.kind.as_deref(), Some("bé"));
    assert_eq!(o.id.as_ref().map(Id::as_str), Some("😀"));
}

#[test]
fn only_syntax_errors_fail() {
    let s = Surprises::default();
    assert!(read_record::<Outer<'_>>(r#"{"id":"1","#, "outer", &s).is_err());
    assert!(read_record::<Outer<'_>>(r#"{"id":"1"} x"#, "outer", &s).is_err());
    assert!(read_record::<Outer<'_>>("[1]", "outer", &s).expect("json").is_none());
}

#[test]
fn numbers_out_of_range_are_absent() {
    let (o, s) = read(r#"{"count":-1}"#);
    assert!(o.count.is_none());
    assert_eq!(s.len(), 1);
    let (o, _) = read(r#"{"count":1e30}"#);
    assert!(o.count.is_none());
    let (o, _) = read(r#"{"count":" 42 "}"#);
    assert_eq!(o.count, Some(42));
}

//! Tests of `oci.rs`.

use super::*;

const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

#[test]
fn references_parse_and_print_back() {
    for s in [
        "oci://127.0.0.1:5000/team/sentiment:1.0",
        &format!("oci://ghcr.io/org/plugins/lang-filter@{D}"),
        &format!("oci://localhost/a:v1.2_3@{D}"),
    ] {
        let r: OciRef = s.parse().expect(s);
        assert_eq!(r.to_string(), s);
    }
    let r: OciRef = "oci://127.0.0.1:5000/team/sentiment:1.0".parse().expect("parse");
    assert_eq!(
        (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
        ("127.0.0.1:5000", "team/sentiment", Some("1.0"))
    );
    assert!(r.is_loopback());
    assert!(!"oci://ghcr.io/a:1".parse::<OciRef>().expect("parse").is_loopback());
    assert!("oci://[::1]:5000/a:1".parse::<OciRef>().expect("parse").is_loopback());
    for (bad, why) in [
        ("ghcr.io/a:1", "oci://"),
        ("oci://ghcr.io", "no repository"),
        ("oci://ghcr.io/a", "tag or a digest"),
        ("oci://ghcr.io/A:1", "lowercase"),
        ("oci://ghcr.io/a@sha256:abc", "64 lowercase hex"),
        ("oci:///a:1", "no registry"),
        ("oci://ghcr.io/a:-x", "tag must be"),
    ] {
        let e = bad.parse::<OciRef>().expect_err(bad).to_string();
        assert!(e.contains(why) && e.contains(bad), "{bad}: {e}");
    }
}

#[test]
fn a_plugin_is_a_path_or_a_reference() {
    #[derive(Deserialize)]
    struct S {
        plugin: PluginSource,
    }
    let s: S = toml::from_str("plugin = \"plugins/x.wasm\"").expect("path");
    assert_eq!(s.plugin, PluginSource::Path("plugins/x.wasm".into()));
    let s: S = toml::from_str("plugin = \"oci://r.io/x:1\"").expect("oci");
    assert!(matches!(s.plugin, PluginSource::Oci(_)));
    let e = toml::from_str::<S>("plugin = \"oci://r.io/x\"").err().expect("no tag").to_string();
    assert!(e.contains("tag or a digest"), "{e}");
}

#[test]
fn the_one_wasm_layer_is_found_and_others_are_refused() {
    let r: OciRef = "oci://r.io/x:1".parse().expect("parse");
    let m = |layers: serde_json::Value| serde_json::to_vec(&serde_json::json!({"layers": layers})).expect("json");
    let ok = m(serde_json::json!([{"mediaType": WASM_MEDIA_TYPE, "digest": D, "size": 3}]));
    assert_eq!(wasm_layer(&r, &ok).expect("layer"), (D.to_owned(), 3));
    let two = m(
        serde_json::json!([{"mediaType": WASM_MEDIA_TYPE, "digest": D}, {"mediaType": WASM_MEDIA_TYPE, "digest": D}]),
    );
    assert!(wasm_layer(&r, &two).expect_err("two").to_string().contains("found 2"));
    let tar = m(serde_json::json!([{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": D}]));
    assert!(wasm_layer(&r, &tar).expect_err("tar").to_string().contains("image.layer.v1.tar"));
}

#[test]
fn locks_round_trip_and_bad_digests_are_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let pipeline = dir.path().join("p.toml");
    assert!(Lock::read_for(&pipeline).expect("none").is_none());
    let lock =
        Lock { stages: vec![LockedStage { name: "s".into(), plugin: "oci://r.io/x:1".into(), digest: D.into() }] };
    lock.write(&Lock::path_for(&pipeline)).expect("write");
    let (back, path) = Lock::read_for(&pipeline).expect("read").expect("some");
    assert_eq!((back, path), (lock, dir.path().join("p.toml.lock")));
    std::fs::write(dir.path().join("p.toml.lock"), "[[stage]]\nname = \"s\"\nplugin = \"x\"\ndigest = \"md5:1\"\n")
        .expect("w");
    let e = Lock::read_for(&pipeline).expect_err("bad digest").to_string();
    assert!(e.contains("p.toml.lock") && e.contains("md5:1"), "{e}");
}

#[test]
fn docker_config_credentials_are_read() {
    let dir = tempfile::tempdir().expect("tmp");
    // base64("ci:s3cret")
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"auths":{"https://127.0.0.1:5000":{"auth":"Y2k6czNjcmV0"},"tok.io":{"registrytoken":"abc"}}}"#,
    )
    .expect("write");
    // SAFETY of the test: nextest runs each test in its own process.
    // The variable is read by `docker_auth` only.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("DOCKER_CONFIG", dir.path());
    }
    assert_eq!(docker_auth("127.0.0.1:5000"), Some(RegistryAuth::Basic("ci".into(), "s3cret".into())));
    assert_eq!(docker_auth("tok.io"), Some(RegistryAuth::Bearer("abc".into())));
    assert_eq!(docker_auth("other.io"), None);
    let e = RegistryConfig { username: Some("u".into()), ..RegistryConfig::default() }.auth("x").expect_err("half");
    assert!(e.to_string().contains("go together"));
}

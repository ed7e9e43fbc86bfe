//! Signed plugins: Ed25519 key pairs, signatures of a component's digest,
//! and the check a pipeline's `[verify] keys` asks for.
//!
//! * A key pair is two one-line text files: `NAME.key` (the secret, mode
//!   0600, never printed) and `NAME.pub`, each `traptor-ed25519-<kind>
//!   <base64 of 32 bytes>`. A key's id is the first 16 hex digits of the
//!   SHA-256 of its public bytes.
//! * What is signed is `traptor-plugin-signature-v1\n` followed by the
//!   component's digest (`sha256:<hex>` of the `.wasm` bytes): the same
//!   signature holds for a file and for that file pushed to a registry.
//! * A signature is one JSON line `{"alg":"ed25519","key_id":…,"digest":…,
//!   "signature":<base64>}`: beside a file in `FILE.wasm.sig` (one line per
//!   key), in a registry as a referrer artifact of the plugin's manifest.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};

/// The media type of a signature record (an OCI referrer's artifact type).
pub const SIGNATURE_MEDIA_TYPE: &str = "application/vnd.traptor.plugin.signature.v1+json";
const CONTEXT: &[u8] = b"traptor-plugin-signature-v1\n";
const PUBLIC_TAG: &str = "traptor-ed25519-public";
const SECRET_TAG: &str = "traptor-ed25519-secret";

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a traptor {kind} key: {reason}")]
    BadKey { path: PathBuf, kind: &'static str, reason: String },
    #[error("{path} already exists; keygen never overwrites a key (remove it or choose another name)")]
    Exists { path: PathBuf },
    #[error("{path}, line {line}: not a signature record: {reason}")]
    BadSignatureFile { path: PathBuf, line: usize, reason: String },
    #[error("cannot make a key: no system randomness: {0}")]
    Random(String),
    #[error("{path} changed while it was loaded: {verified} was verified, {loaded} was read; try again")]
    ChangedWhileLoading { path: PathBuf, verified: String, loaded: String },
    #[error(
        "component {digest} has no valid signature by any of the keys {tried} ({found}); sign it with `traptor-host plugin sign`"
    )]
    Unverified { digest: String, tried: String, found: String },
}

/// A public key read from a `.pub` file.
#[derive(Debug, Clone)]
pub struct PublicKey {
    pub path: PathBuf,
    pub id: String,
    key: VerifyingKey,
}

/// A signature of one component by one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureRecord {
    pub alg: String,
    pub key_id: String,
    pub digest: String,
    pub signature: String,
}

fn key_id(public: &VerifyingKey) -> String {
    super::cache::hex_sha256(public.as_bytes())[..16].to_owned()
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// Write `NAME.key` (mode 0600) and `NAME.pub`; refuses to overwrite either.
pub fn keygen(name: &Path) -> Result<(PathBuf, PathBuf, String), SigningError> {
    let secret_path = with_suffix(name, ".key");
    let public_path = with_suffix(name, ".pub");
    for p in [&secret_path, &public_path] {
        if p.exists() {
            return Err(SigningError::Exists { path: p.clone() });
        }
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| SigningError::Random(e.to_string()))?;
    let key = SigningKey::from_bytes(&seed);
    seed.fill(0);
    let public = key.verifying_key();
    let secret_line = format!("{SECRET_TAG} {}\n", b64().encode(key.to_bytes()));
    write_new(&secret_path, secret_line.as_bytes(), 0o600)?;
    let public_line = format!("{PUBLIC_TAG} {}\n", b64().encode(public.as_bytes()));
    write_new(&public_path, public_line.as_bytes(), 0o644)?;
    Ok((secret_path, public_path, key_id(&public)))
}

fn with_suffix(name: &Path, suffix: &str) -> PathBuf {
    let mut s = name.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), SigningError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let err = |source| SigningError::Write { path: path.to_owned(), source };
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(err)?;
    f.write_all(bytes).map_err(err)
}

/// The 32 bytes of a key file's one line `TAG BASE64`.
fn read_key_bytes(path: &Path, tag: &str, kind: &'static str) -> Result<[u8; 32], SigningError> {
    let text = std::fs::read_to_string(path).map_err(|source| SigningError::Read { path: path.to_owned(), source })?;
    let bad = |reason: &str| SigningError::BadKey { path: path.to_owned(), kind, reason: reason.to_owned() };
    let mut parts = text.split_whitespace();
    match parts.next() {
        Some(t) if t == tag => {}
        Some(t) if t == PUBLIC_TAG || t == SECRET_TAG => {
            return Err(bad(&format!("it holds a {t} key")));
        }
        _ => return Err(bad(&format!("the file must be one line `{tag} BASE64`"))),
    }
    let raw = parts.next().and_then(|b| b64().decode(b).ok()).ok_or_else(|| bad("the key is not base64"))?;
    raw.try_into().map_err(|_| bad("the key is not 32 bytes"))
}

/// Read a public key (`NAME.pub`).
pub fn read_public(path: &Path) -> Result<PublicKey, SigningError> {
    let bytes = read_key_bytes(path, PUBLIC_TAG, "public")?;
    let key = VerifyingKey::from_bytes(&bytes).map_err(|e| SigningError::BadKey {
        path: path.to_owned(),
        kind: "public",
        reason: e.to_string(),
    })?;
    Ok(PublicKey { path: path.to_owned(), id: key_id(&key), key })
}

/// Read a secret key (`NAME.key`).
pub fn read_secret(path: &Path) -> Result<SigningKey, SigningError> {
    read_key_bytes(path, SECRET_TAG, "secret").map(|b| SigningKey::from_bytes(&b))
}

fn message(digest: &str) -> Vec<u8> {
    [CONTEXT, digest.as_bytes()].concat()
}

/// Sign a component's digest (`sha256:<hex>`).
pub fn sign(key: &SigningKey, digest: &str) -> SignatureRecord {
    let signature = key.sign(&message(digest));
    SignatureRecord {
        alg: "ed25519".into(),
        key_id: key_id(&key.verifying_key()),
        digest: digest.to_owned(),
        signature: b64().encode(signature.to_bytes()),
    }
}

/// Whether `record` is a valid signature of `digest` by `key`.
pub fn holds(record: &SignatureRecord, digest: &str, key: &PublicKey) -> bool {
    if record.alg != "ed25519" || record.digest != digest || record.key_id != key.id {
        return false;
    }
    let Some(bytes) = b64().decode(&record.signature).ok().and_then(|b| <[u8; 64]>::try_from(b).ok()) else {
        return false;
    };
    key.key.verify(&message(digest), &ed25519_dalek::Signature::from_bytes(&bytes)).is_ok()
}

/// The key that signed `digest` among `records`, or why none did.
pub fn verify<'k>(
    records: &[SignatureRecord],
    digest: &str,
    keys: &'k [PublicKey],
) -> Result<&'k PublicKey, SigningError> {
    if let Some(k) = keys.iter().find(|k| records.iter().any(|r| holds(r, digest, k))) {
        return Ok(k);
    }
    let tried = keys.iter().map(|k| format!("{} ({})", k.path.display(), k.id)).collect::<Vec<_>>().join(", ");
    let found = if records.is_empty() {
        "it has no signature".to_owned()
    } else {
        let by: Vec<String> =
            records
                .iter()
                .map(|r| {
                    if r.digest == digest {
                        format!("key {}", r.key_id)
                    } else {
                        format!("another digest {}", r.digest)
                    }
                })
                .collect();
        format!("signatures found: {}", by.join(", "))
    };
    Err(SigningError::Unverified { digest: digest.to_owned(), tried, found })
}

/// `FILE.wasm.sig`.
pub fn sig_path(component: &Path) -> PathBuf {
    with_suffix(component, ".sig")
}

/// The records of a signature file (none if it does not exist).
pub fn read_sig_file(path: &Path) -> Result<Vec<SignatureRecord>, SigningError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(SigningError::Read { path: path.to_owned(), source }),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| SigningError::BadSignatureFile {
                path: path.to_owned(),
                line: i + 1,
                reason: e.to_string(),
            })
        })
        .collect()
}

/// Add `new` to a signature file, replacing a record of the same key and
/// digest (written atomically).
pub fn add_to_sig_file(path: &Path, new: &[SignatureRecord]) -> Result<(), SigningError> {
    let mut records = read_sig_file(path)?;
    records.retain(|r| !new.iter().any(|n| n.key_id == r.key_id && n.digest == r.digest));
    records.extend(new.iter().cloned());
    let text: String = records.iter().map(record_line).collect();
    let tmp = with_suffix(path, &format!(".tmp-{}", std::process::id()));
    let err = |source| SigningError::Write { path: path.to_owned(), source };
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// One record as its JSON line.
pub fn record_line(r: &SignatureRecord) -> String {
    format!("{}\n", serde_json::to_string(r).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_holds_for_its_key_and_digest_only() {
        let dir = tempfile::tempdir().expect("tmp");
        let (secret, public, id) = keygen(&dir.path().join("team")).expect("keygen");
        assert!(matches!(keygen(&dir.path().join("team")), Err(SigningError::Exists { .. })));
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&secret).expect("meta").permissions().mode() & 0o777, 0o600);
        let (_, other_pub, _) = keygen(&dir.path().join("other")).expect("keygen");
        let key = read_secret(&secret).expect("secret");
        let pk = read_public(&public).expect("public");
        assert_eq!(pk.id, id);
        let other = read_public(&other_pub).expect("public");
        let digest = format!("sha256:{}", "ab".repeat(32));
        let r = sign(&key, &digest);
        assert!(holds(&r, &digest, &pk));
        assert!(!holds(&r, &digest, &other));
        assert!(!holds(&r, &format!("sha256:{}", "cd".repeat(32)), &pk));
        let mut forged = r.clone();
        forged.signature =
            sign(&read_secret(&with_suffix(&dir.path().join("other"), ".key")).expect("k"), &digest).signature;
        assert!(!holds(&forged, &digest, &pk), "another key's signature under this key's id");
        let keys = [other.clone(), pk.clone()];
        assert_eq!(verify(std::slice::from_ref(&r), &digest, &keys).expect("verified").id, id);
        let e = verify(&[], &digest, std::slice::from_ref(&other)).expect_err("unsigned").to_string();
        assert!(e.contains("no signature") && e.contains("other.pub") && e.contains(&digest), "{e}");
        // The secret is refused where a public key is expected, and vice versa.
        assert!(read_public(&secret).is_err() && read_secret(&public).is_err());
        // Signature files: one line per key, re-signing replaces.
        let sig = dir.path().join("x.wasm.sig");
        add_to_sig_file(&sig, std::slice::from_ref(&r)).expect("add");
        add_to_sig_file(&sig, std::slice::from_ref(&r)).expect("add");
        assert_eq!(read_sig_file(&sig).expect("read"), vec![r]);
        std::fs::write(&sig, "{\"alg\":1}\n").expect("write");
        let e = read_sig_file(&sig).expect_err("bad").to_string();
        assert!(e.contains("line 1"), "{e}");
    }
}

//! Plugins from OCI registries (issue 14): references, pulls into a
//! content-addressed cache, pushes, and the lock file.
//!
//! A component travels as an OCI artifact in the layout of the CNCF TAG
//! Runtime "Wasm OCI artifact" (what `wkg` and `oras` write): an image
//! manifest whose config has the media type `application/vnd.wasm.config.v0+json`
//! (empty or JSON — both are accepted) and whose one layer, of media type
//! `application/wasm`, is the component. Every byte pulled is checked
//! against its digest before it is used or cached.
//!
//! Cache (under the compiled-component cache directory):
//! `oci/blobs/sha256/<hex>` holds components, `oci/manifests/sha256/<hex>`
//! manifests, `oci/tags/<registry>/<repository>/<tag>` the last digest a tag
//! resolved to. A run whose digest is known (pinned in the reference or the
//! lock) and cached needs no registry.
//!
//! Credentials: a stage's `[stages.registry]` (`username` + `password`, or
//! `token`, as `{ env }`/`{ file }`), else the Docker `config.json` `auths`
//! entry of the registry, else anonymous. They are never logged. Plain HTTP
//! only for loopback registries or with `insecure = true`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::Deserialize;

use crate::secret::SecretRef;

/// The manifest media type written and preferred.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The config media type of a Wasm artifact.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// The media type of the component layer.
pub const WASM_MEDIA_TYPE: &str = "application/wasm";

/// Why a plugin could not be fetched, pinned or published.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error(
        "{reference:?} is not a plugin reference: {reason} (expected oci://REGISTRY/REPOSITORY:TAG, @sha256:DIGEST, or both)"
    )]
    Reference { reference: String, reason: String },
    #[error("registry error for {reference}: {message}")]
    Registry { reference: String, message: String },
    #[error("{reference}: {what} has digest {found}, expected {expected}")]
    Digest { reference: String, what: &'static str, expected: String, found: String },
    #[error("{reference}: not a Wasm component artifact: {reason}")]
    Manifest { reference: String, reason: String },
    #[error("plugin cache {path}: {source}")]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{plugin} resolves to {found}, but the lock file {lock} pins {expected}: run `traptor-host plugin lock` if the change is wanted"
    )]
    LockMismatch { plugin: String, lock: PathBuf, expected: String, found: String },
    #[error("the lock file {lock} {reason}: run `traptor-host plugin lock --pipeline …` again")]
    LockStale { lock: PathBuf, reason: String },
    #[error("lock file {path}: {reason}")]
    LockFile { path: PathBuf, reason: String },
    #[error("registry credentials: {0}")]
    Credentials(String),
    #[error("cannot start the registry client: {0}")]
    Runtime(String),
}

/// `oci://REGISTRY/REPOSITORY[:TAG][@sha256:DIGEST]`.
#[derive(Clone, PartialEq, Eq)]
pub struct OciRef {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl fmt::Display for OciRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "oci://{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for OciRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// True for `sha256:` and 64 lowercase hex digits.
pub fn is_digest(d: &str) -> bool {
    d.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", super::cache::hex_sha256(bytes))
}

impl FromStr for OciRef {
    type Err = OciError;
    fn from_str(s: &str) -> Result<OciRef, OciError> {
        let bad = |reason: &str| OciError::Reference { reference: s.to_owned(), reason: reason.to_owned() };
        let rest = s.strip_prefix("oci://").ok_or_else(|| bad("it does not start with oci://"))?;
        let (name, digest) = match rest.split_once('@') {
            Some((n, d)) if is_digest(d) => (n, Some(d.to_owned())),
            Some(_) => return Err(bad("the digest must be sha256: and 64 lowercase hex digits")),
            None => (rest, None),
        };
        let (registry, path) = name.split_once('/').ok_or_else(|| bad("no repository after the registry"))?;
        if registry.is_empty() || registry.contains(|c: char| c.is_whitespace() || c == '@') {
            return Err(bad("no registry host"));
        }
        let (repository, tag) = match path.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r, Some(t.to_owned())),
            _ => (path, None),
        };
        let repo_ok = !repository.is_empty()
            && repository.split('/').all(|part| {
                !part.is_empty()
                    && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            });
        if !repo_ok {
            return Err(bad("the repository must be lowercase letters, digits, '.', '_', '-' and '/'"));
        }
        if let Some(t) = &tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                && !t.starts_with(['.', '-']);
            if !ok {
                return Err(bad("the tag must be up to 128 letters, digits, '.', '_' or '-'"));
            }
        }
        if tag.is_none() && digest.is_none() {
            return Err(bad("name a tag or a digest"));
        }
        Ok(OciRef { registry: registry.to_owned(), repository: repository.to_owned(), tag, digest })
    }
}

impl OciRef {
    fn reference(&self) -> Reference {
        match (&self.tag, &self.digest) {
            (Some(t), Some(d)) => {
                Reference::with_tag_and_digest(self.registry.clone(), self.repository.clone(), t.clone(), d.clone())
            }
            (None, Some(d)) => Reference::with_digest(self.registry.clone(), self.repository.clone(), d.clone()),
            (t, None) => Reference::with_tag(
                self.registry.clone(),
                self.repository.clone(),
                t.clone().unwrap_or_else(|| "latest".into()),
            ),
        }
    }

    fn at_digest(&self, digest: &str) -> Reference {
        Reference::with_digest(self.registry.clone(), self.repository.clone(), digest.to_owned())
    }

    /// Whether the registry is on this machine (plain HTTP allowed).
    pub fn is_loopback(&self) -> bool {
        let host = match self.registry.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => &self.registry,
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

/// A stage's `plugin`: a file, or a component in a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginSource {
    Path(PathBuf),
    Oci(OciRef),
}

impl fmt::Display for PluginSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PluginSource::Path(p) => write!(f, "{}", p.display()),
            PluginSource::Oci(r) => write!(f, "{r}"),
        }
    }
}

impl<'de> Deserialize<'de> for PluginSource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.starts_with("oci://") {
            s.parse().map(PluginSource::Oci).map_err(serde::de::Error::custom)
        } else {
            Ok(PluginSource::Path(PathBuf::from(s)))
        }
    }
}

/// `[stages.registry]`: how to reach the stage's registry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// User name for basic authentication (with `password`).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<SecretRef>,
    /// A bearer token instead of user and password.
    #[serde(default)]
    pub token: Option<SecretRef>,
    /// Plain HTTP to a registry that is not on this machine.
    #[serde(default)]
    pub insecure: bool,
}

impl RegistryConfig {
    /// The credentials for `registry`: these keys, else Docker's
    /// `config.json`, else none.
    pub fn auth(&self, registry: &str) -> Result<RegistryAuth, OciError> {
        let read = |s: &SecretRef| s.resolve().map_err(OciError::Credentials);
        match (&self.username, &self.password, &self.token) {
            (_, _, Some(t)) => return Ok(RegistryAuth::Bearer(read(t)?.expose().to_owned())),
            (Some(u), Some(p), None) => return Ok(RegistryAuth::Basic(u.clone(), read(p)?.expose().to_owned())),
            (Some(_), None, None) | (None, Some(_), None) => {
                return Err(OciError::Credentials("`username` and `password` go together".into()));
            }
            (None, None, None) => {}
        }
        Ok(docker_auth(registry).unwrap_or(RegistryAuth::Anonymous))
    }
}

/// The registry's entry in Docker's `config.json` (`$DOCKER_CONFIG`, else
/// `~/.docker`): `auth` (base64 `user:password`), `username` + `password`,
/// or `registrytoken`/`identitytoken`.
fn docker_auth(registry: &str) -> Option<RegistryAuth> {
    use base64::Engine as _;
    let dir = std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))?;
    let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let auths = v.get("auths")?.as_object()?;
    let entry = auths.iter().find(|(k, _)| {
        let k = k.trim_start_matches("https://").trim_start_matches("http://");
        k.trim_end_matches('/') == registry || k.split('/').next() == Some(registry)
    })?;
    let e = entry.1;
    let s = |k: &str| e.get(k).and_then(|v| v.as_str()).filter(|s| !s.is_empty()).map(str::to_owned);
    if let Some(a) = s("auth") {
        let raw = base64::engine::general_purpose::STANDARD.decode(a.trim()).ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (u, p) = text.split_once(':')?;
        return Some(RegistryAuth::Basic(u.to_owned(), p.to_owned()));
    }
    if let (Some(u), Some(p)) = (s("username"), s("password")) {
        return Some(RegistryAuth::Basic(u, p));
    }
    s("registrytoken").or_else(|| s("identitytoken")).map(RegistryAuth::Bearer)
}

/// A registry client for one reference, with its credentials.
pub struct Registry {
    client: Client,
    auth: RegistryAuth,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    pub fn new(r: &OciRef, cfg: &RegistryConfig) -> Result<Registry, OciError> {
        let protocol = if r.is_loopback() || cfg.insecure {
            ClientProtocol::HttpsExcept(vec![r.registry.clone()])
        } else {
            ClientProtocol::Https
        };
        let client = Client::new(ClientConfig { protocol, ..ClientConfig::default() });
        Ok(Registry { client, auth: cfg.auth(&r.registry)? })
    }

    fn err(r: &OciRef, e: impl fmt::Display) -> OciError {
        OciError::Registry { reference: r.to_string(), message: e.to_string() }
    }

    /// The manifest digest `r` names now (its digest, or what its tag points to).
    pub async fn resolve(&self, r: &OciRef) -> Result<String, OciError> {
        if let Some(d) = &r.digest {
            return Ok(d.clone());
        }
        let d = self.client.fetch_manifest_digest(&r.reference(), &self.auth).await.map_err(|e| Self::err(r, e))?;
        if !is_digest(&d) {
            return Err(Self::err(r, format!("the registry answered with digest {d:?}")));
        }
        Ok(d)
    }

    async fn manifest(&self, r: &OciRef, digest: &str) -> Result<Vec<u8>, OciError> {
        let (bytes, _) = self
            .client
            .pull_manifest_raw(&r.at_digest(digest), &self.auth, &[MANIFEST_MEDIA_TYPE])
            .await
            .map_err(|e| Self::err(r, e))?;
        Ok(bytes.to_vec())
    }

    async fn blob(&self, r: &OciRef, digest: &str) -> Result<Vec<u8>, OciError> {
        let mut out = Vec::new();
        self.client.pull_blob(&r.at_digest(digest), digest, &mut out).await.map_err(|e| Self::err(r, e))?;
        Ok(out)
    }

    /// Publish `component` (with its config JSON and manifest annotations)
    /// under `r`; returns the manifest digest.
    pub async fn push(
        &self,
        r: &OciRef,
        component: &[u8],
        config: &[u8],
        annotations: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, OciError> {
        let reference = r.reference();
        self.client
            .auth(&reference, &self.auth, oci_client::RegistryOperation::Push)
            .await
            .map_err(|e| Self::err(r, e))?;
        let (layer_digest, config_digest) = (digest_of(component), digest_of(config));
        self.client.push_blob(&reference, config.to_vec(), &config_digest).await.map_err(|e| Self::err(r, e))?;
        self.client.push_blob(&reference, component.to_vec(), &layer_digest).await.map_err(|e| Self::err(r, e))?;
        let title = annotations.get("org.opencontainers.image.title").and_then(|v| v.as_str()).unwrap_or("plugin");
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": { "mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": config.len() },
            "layers": [{
                "mediaType": WASM_MEDIA_TYPE,
                "digest": layer_digest,
                "size": component.len(),
                "annotations": { "org.opencontainers.image.title": format!("{title}.wasm") },
            }],
            "annotations": annotations,
        });
        let bytes = serde_json::to_vec(&manifest).map_err(|e| Self::err(r, e))?;
        let ct = reqwest::header::HeaderValue::from_static(MANIFEST_MEDIA_TYPE);
        self.client.push_manifest_raw(&reference, bytes.clone(), ct).await.map_err(|e| Self::err(r, e))?;
        Ok(digest_of(&bytes))
    }
}

/// Signature referrers read per manifest, and the largest record read.
pub const MAX_REFERRERS: usize = 64;
pub const MAX_RECORD_BYTES: u64 = 16 << 10;

/// Whether a registry answer means "no such manifest" (404, MANIFEST_UNKNOWN).
fn not_found(e: &oci_client::errors::OciDistributionError) -> bool {
    use oci_client::errors::{OciDistributionError as E, OciErrorCode};
    match e {
        E::ImageManifestNotFoundError(_) => true,
        E::ServerError { code, .. } => *code == 404,
        E::RegistryError { envelope, .. } => {
            envelope.errors.iter().any(|x| matches!(x.code, OciErrorCode::ManifestUnknown | OciErrorCode::NotFound))
        }
        _ => false,
    }
}

/// The OCI index media type (the referrers tag schema's index).
const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// The empty config of an artifact manifest: `{}`.
const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";

impl Registry {
    /// Attach a signature record to the manifest `manifest_digest` of `r`
    /// as an OCI referrer (an artifact manifest whose `subject` is the
    /// plugin's), listed by the registry's referrers API or, where it has
    /// none (distribution 2.x), in the referrers tag schema's index
    /// (`sha256-<hex>`), as cosign's signatures travel. Returns the
    /// signature manifest's digest.
    pub async fn push_signature(
        &self,
        r: &OciRef,
        manifest_digest: &str,
        record: &[u8],
        key_id: &str,
    ) -> Result<String, OciError> {
        use super::signing::SIGNATURE_MEDIA_TYPE;
        let subject = r.at_digest(manifest_digest);
        self.client
            .auth(&subject, &self.auth, oci_client::RegistryOperation::Push)
            .await
            .map_err(|e| Self::err(r, e))?;
        let subject_size = self.manifest(r, manifest_digest).await?.len();
        let empty = b"{}";
        let (empty_digest, record_digest) = (digest_of(empty), digest_of(record));
        let push_blob = |bytes: &[u8], digest: String| {
            let bytes = bytes.to_vec();
            let subject = subject.clone();
            async move { self.client.push_blob(&subject, bytes, &digest).await.map_err(|e| Self::err(r, e)) }
        };
        push_blob(empty, empty_digest.clone()).await?;
        push_blob(record, record_digest.clone()).await?;
        let annotations = serde_json::json!({ "dev.traptor.signature.key_id": key_id });
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "artifactType": SIGNATURE_MEDIA_TYPE,
            "config": { "mediaType": EMPTY_MEDIA_TYPE, "digest": empty_digest, "size": empty.len() },
            "layers": [{ "mediaType": SIGNATURE_MEDIA_TYPE, "digest": record_digest, "size": record.len() }],
            "subject": { "mediaType": MANIFEST_MEDIA_TYPE, "digest": manifest_digest, "size": subject_size },
            "annotations": annotations,
        });
        let bytes = serde_json::to_vec(&manifest).map_err(|e| Self::err(r, e))?;
        let digest = digest_of(&bytes);
        let ct = reqwest::header::HeaderValue::from_static(MANIFEST_MEDIA_TYPE);
        self.client.push_manifest_raw(&r.at_digest(&digest), bytes.clone(), ct).await.map_err(|e| Self::err(r, e))?;
        let listed = self.referrers(r, manifest_digest).await?;
        if !listed.iter().any(|(d, _)| *d == digest) {
            let entry = serde_json::json!({
                "mediaType": MANIFEST_MEDIA_TYPE,
                "digest": digest,
                "size": bytes.len(),
                "artifactType": SIGNATURE_MEDIA_TYPE,
                "annotations": annotations,
            });
            self.add_to_referrers_tag(r, manifest_digest, entry).await?;
        }
        Ok(digest)
    }

    /// Signature manifests referring to `manifest_digest`: (digest, size).
    async fn referrers(&self, r: &OciRef, manifest_digest: &str) -> Result<Vec<(String, i64)>, OciError> {
        use super::signing::SIGNATURE_MEDIA_TYPE;
        let subject = r.at_digest(manifest_digest);
        self.client
            .auth(&subject, &self.auth, oci_client::RegistryOperation::Pull)
            .await
            .map_err(|e| Self::err(r, e))?;
        let index =
            self.client.pull_referrers(&subject, Some(SIGNATURE_MEDIA_TYPE)).await.map_err(|e| Self::err(r, e))?;
        Ok(index
            .manifests
            .into_iter()
            .filter(|m| m.artifact_type.as_deref().is_none_or(|t| t == SIGNATURE_MEDIA_TYPE))
            .map(|m| (m.digest, m.size))
            .collect())
    }

    /// The referrers tag schema: add `entry` to the index tagged
    /// `sha256-<hex>` of the subject (made if it is missing).
    async fn add_to_referrers_tag(
        &self,
        r: &OciRef,
        manifest_digest: &str,
        entry: serde_json::Value,
    ) -> Result<(), OciError> {
        let tag = manifest_digest.replacen(':', "-", 1);
        let at_tag = Reference::with_tag(r.registry.clone(), r.repository.clone(), tag);
        // Only a missing index starts a new one: any other failure, or an
        // index that does not parse, would lose the referrers it lists.
        let mut index = match self.client.pull_manifest_raw(&at_tag, &self.auth, &[INDEX_MEDIA_TYPE]).await {
            Ok((bytes, _)) => serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .filter(|v| v.get("manifests").is_some_and(serde_json::Value::is_array))
                .ok_or_else(|| {
                    Self::err(r, format!("the referrers index {at_tag} is not an OCI index; left as it is"))
                })?,
            Err(e) if not_found(&e) => {
                serde_json::json!({ "schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": [] })
            }
            Err(e) => return Err(Self::err(r, e)),
        };
        if let Some(list) = index.get_mut("manifests").and_then(serde_json::Value::as_array_mut) {
            list.retain(|m| m.get("digest") != entry.get("digest"));
            list.push(entry);
        }
        let bytes = serde_json::to_vec(&index).map_err(|e| Self::err(r, e))?;
        let ct = reqwest::header::HeaderValue::from_static(INDEX_MEDIA_TYPE);
        self.client.push_manifest_raw(&at_tag, bytes, ct).await.map_err(|e| Self::err(r, e))?;
        Ok(())
    }

    /// Every signature record attached to `manifest_digest` (records that
    /// cannot be read are skipped, logged; at most [`MAX_REFERRERS`]
    /// referrers, each record at most [`MAX_RECORD_BYTES`]).
    pub async fn signatures(
        &self,
        r: &OciRef,
        manifest_digest: &str,
    ) -> Result<Vec<super::signing::SignatureRecord>, OciError> {
        use super::signing::SIGNATURE_MEDIA_TYPE;
        let mut out = Vec::new();
        for (digest, _) in self.referrers(r, manifest_digest).await?.into_iter().take(MAX_REFERRERS) {
            let manifest: serde_json::Value = serde_json::from_slice(&self.manifest(r, &digest).await?)
                .map_err(|e| Self::err(r, format!("signature manifest {digest}: {e}")))?;
            let layers = manifest.get("layers").and_then(serde_json::Value::as_array).cloned().unwrap_or_default();
            for layer in layers {
                let (Some(t), Some(d)) = (layer["mediaType"].as_str(), layer["digest"].as_str()) else { continue };
                let size = layer["size"].as_u64().unwrap_or(u64::MAX);
                if t != SIGNATURE_MEDIA_TYPE || !is_digest(d) || size > MAX_RECORD_BYTES {
                    continue;
                }
                let bytes = self.blob(r, d).await?;
                match (digest_of(&bytes) == d).then(|| serde_json::from_slice(&bytes)) {
                    Some(Ok(record)) => out.push(record),
                    Some(Err(e)) => {
                        tracing::warn!(reference = %r, signature = %digest, error = %e, "unreadable signature record skipped")
                    }
                    None => {
                        tracing::warn!(reference = %r, signature = %digest, "signature blob does not match its digest; skipped")
                    }
                }
            }
        }
        Ok(out)
    }
}

/// The content-addressed store of pulled artifacts.
#[derive(Debug, Clone)]
pub struct OciCache {
    root: PathBuf,
}

impl OciCache {
    /// Under the compiled-component cache directory.
    pub fn new(cache_dir: &Path) -> OciCache {
        OciCache { root: cache_dir.join("oci") }
    }

    fn blob_path(&self, kind: &str, digest: &str) -> PathBuf {
        self.root.join(kind).join("sha256").join(digest.trim_start_matches("sha256:"))
    }

    fn tag_path(&self, r: &OciRef) -> Option<PathBuf> {
        let tag = r.tag.as_deref()?;
        let registry = r.registry.replace(':', "_");
        Some(self.root.join("tags").join(registry).join(&r.repository).join(tag))
    }

    /// A cached blob, only if its bytes still have their digest.
    fn get(&self, kind: &str, digest: &str) -> Option<Vec<u8>> {
        let bytes = std::fs::read(self.blob_path(kind, digest)).ok()?;
        (digest_of(&bytes) == digest).then_some(bytes)
    }

    fn put(&self, kind: &str, digest: &str, bytes: &[u8]) -> Result<PathBuf, OciError> {
        let path = self.blob_path(kind, digest);
        write_atomically(&path, bytes)?;
        Ok(path)
    }

    fn remember_tag(&self, r: &OciRef, digest: &str) {
        if let Some(p) = self.tag_path(r)
            && let Err(e) = write_atomically(&p, digest.as_bytes())
        {
            tracing::debug!(error = %e, "cannot remember the tag's digest");
        }
    }

    fn cached_tag(&self, r: &OciRef) -> Option<String> {
        let d = std::fs::read_to_string(self.tag_path(r)?).ok()?;
        let d = d.trim();
        is_digest(d).then(|| d.to_owned())
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), OciError> {
    let err = |source| OciError::Cache { path: path.to_owned(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// A component fetched into the cache.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The manifest digest (what a lock pins).
    pub digest: String,
    /// The component file in the cache.
    pub path: PathBuf,
    pub size: u64,
}

/// Fetch `r` into `cache` (or find it there), checking every digest.
/// `pinned` (a lock's digest) must equal what `r` resolves to; when the
/// registry cannot be reached, a pinned or previously resolved digest
/// that is cached is used (logged).
pub async fn fetch(
    r: &OciRef,
    cfg: &RegistryConfig,
    cache: &OciCache,
    pinned: Option<(&str, &Path)>,
) -> Result<Pulled, OciError> {
    let registry = Registry::new(r, cfg)?;
    let digest = match registry.resolve(r).await {
        Ok(d) => {
            cache.remember_tag(r, &d);
            d
        }
        Err(e) => {
            let fallback = pinned.map(|(d, _)| d.to_owned()).or_else(|| cache.cached_tag(r));
            match fallback {
                Some(d) if cache.get("manifests", &d).is_some() => {
                    tracing::warn!(plugin = %r, digest = %d, error = %e, "registry unreachable; using the cached component");
                    d
                }
                _ => return Err(e),
            }
        }
    };
    if let Some((expected, lock)) = pinned
        && expected != digest
    {
        return Err(OciError::LockMismatch {
            plugin: r.to_string(),
            lock: lock.to_owned(),
            expected: expected.to_owned(),
            found: digest,
        });
    }
    let manifest = match cache.get("manifests", &digest) {
        Some(m) => m,
        None => {
            let m = registry.manifest(r, &digest).await?;
            let found = digest_of(&m);
            if found != digest {
                return Err(OciError::Digest {
                    reference: r.to_string(),
                    what: "the manifest",
                    expected: digest,
                    found,
                });
            }
            cache.put("manifests", &digest, &m)?;
            m
        }
    };
    let (layer, size) = wasm_layer(r, &manifest)?;
    let path = cache.blob_path("blobs", &layer);
    if cache.get("blobs", &layer).is_none() {
        let bytes = registry.blob(r, &layer).await?;
        let found = digest_of(&bytes);
        if found != layer {
            return Err(OciError::Digest {
                reference: r.to_string(),
                what: "the component layer",
                expected: layer,
                found,
            });
        }
        cache.put("blobs", &layer, &bytes)?;
    }
    Ok(Pulled { digest, path, size })
}

/// The one `application/wasm` layer of a manifest: digest and size.
fn wasm_layer(r: &OciRef, manifest: &[u8]) -> Result<(String, u64), OciError> {
    let bad = |reason: String| OciError::Manifest { reference: r.to_string(), reason };
    let v: serde_json::Value =
        serde_json::from_slice(manifest).map_err(|e| bad(format!("the manifest is not JSON: {e}")))?;
    let layers = v.get("layers").and_then(|l| l.as_array()).ok_or_else(|| bad("the manifest has no layers".into()))?;
    let wasm: Vec<&serde_json::Value> =
        layers.iter().filter(|l| l.get("mediaType").and_then(|m| m.as_str()) == Some(WASM_MEDIA_TYPE)).collect();
    let [layer] = wasm.as_slice() else {
        let types: Vec<&str> = layers.iter().filter_map(|l| l.get("mediaType").and_then(|m| m.as_str())).collect();
        return Err(bad(format!("expected one {WASM_MEDIA_TYPE} layer, found {}: {types:?}", wasm.len())));
    };
    let digest = layer.get("digest").and_then(|d| d.as_str()).filter(|d| is_digest(d));
    let digest = digest.ok_or_else(|| bad("the layer has no sha256 digest".into()))?;
    Ok((digest.to_owned(), layer.get("size").and_then(|s| s.as_u64()).unwrap_or(0)))
}

/// Run a registry operation from synchronous code (stage loading, the CLI):
/// on a small runtime of its own, in its own thread, so it works whether
/// or not the caller is inside one.
pub fn block_on<T: Send>(f: impl std::future::Future<Output = Result<T, OciError>> + Send) -> Result<T, OciError> {
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| OciError::Runtime(e.to_string()))?
                .block_on(f)
        })
        .join()
        .map_err(|_| OciError::Runtime("the registry client panicked".into()))?
    })
}

/// `<pipeline file>.lock`: the exact component each stage runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    #[serde(default, rename = "stage")]
    pub stages: Vec<LockedStage>,
}

/// One stage in the lock.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedStage {
    pub name: String,
    /// The stage's `plugin` as written in the pipeline.
    pub plugin: String,
    /// Manifest digest (registry) or the file's SHA-256 (path).
    pub digest: String,
}

impl Lock {
    /// The lock file of a pipeline file.
    pub fn path_for(pipeline: &Path) -> PathBuf {
        let mut s = pipeline.as_os_str().to_owned();
        s.push(".lock");
        PathBuf::from(s)
    }

    /// Read the pipeline's lock, if it has one.
    pub fn read_for(pipeline: &Path) -> Result<Option<(Lock, PathBuf)>, OciError> {
        let path = Lock::path_for(pipeline);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(OciError::LockFile { path, reason: e.to_string() }),
        };
        let lock: Lock =
            toml::from_str(&text).map_err(|e| OciError::LockFile { path: path.clone(), reason: e.to_string() })?;
        if let Some(s) = lock.stages.iter().find(|s| !is_digest(&s.digest)) {
            return Err(OciError::LockFile {
                path,
                reason: format!("stage {:?}: {:?} is not a sha256 digest", s.name, s.digest),
            });
        }
        Ok(Some((lock, path)))
    }

    pub fn write(&self, path: &Path) -> Result<(), OciError> {
        let body =
            toml::to_string(self).map_err(|e| OciError::LockFile { path: path.to_owned(), reason: e.to_string() })?;
        let text = format!(
            "# The exact component each stage runs, written by `traptor-host plugin lock`.\n\
             # `run` and `validate` refuse a stage whose plugin resolves to another digest.\n\
             # Commit it beside the pipeline file.\n\n{body}"
        );
        std::fs::write(path, text).map_err(|e| OciError::LockFile { path: path.to_owned(), reason: e.to_string() })
    }

    pub fn stage(&self, name: &str) -> Option<&LockedStage> {
        self.stages.iter().find(|s| s.name == name)
    }
}

#[cfg(test)]
#[path = "oci_tests.rs"]
mod tests;

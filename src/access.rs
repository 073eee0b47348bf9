//! API keys: the keys file (`--api-keys-file`), the [`Keyring`] that answers "which key is
//! this token, and what may it do?", and the generation of new keys
//! (`sensor-stats keys new`). No HTTP here: `http::access` maps routes to scopes and
//! answers 401/403.
//!
//! The file holds one key per line, `NAME SCOPES sha256:HEX`, where `SCOPES` is a
//! comma-separated list of `ingest`, `read`, `delete`, `metrics` and `HEX` the SHA-256 of
//! the token. The token itself is never stored, so a leaked file leaks no credential.
//! `#` starts a comment (a whole line, or the rest of a line after whitespace).
//!
//! A token is checked by hashing it and looking the digest up: the time taken depends on
//! the token's length only, never on how much of it matches a real one (the lookup is
//! keyed by a SHA-256 digest that an attacker cannot steer).

use std::{
    collections::HashMap,
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
};

use arc_swap::ArcSwap;
use sha2::{Digest as _, Sha256};

use crate::reload::{Reload, ReloadOutcome, WatchedFiles};

/// What a key may do; each scope opens one kind of request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// `POST /data`.
    Ingest,
    /// `GET /statistics/{sensor}`.
    Read,
    /// `DELETE /statistics/{sensor}`.
    Delete,
    /// `GET /metrics` (unless `--metrics-public`).
    Metrics,
}

impl Scope {
    /// Every scope, in the order the keys file lists them.
    pub const ALL: [Self; 4] = [Self::Ingest, Self::Read, Self::Delete, Self::Metrics];

    /// The scope's name in the keys file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ingest => "ingest",
            Self::Read => "read",
            Self::Delete => "delete",
            Self::Metrics => "metrics",
        }
    }

    /// The scope called `name` in the keys file.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of scopes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scopes(u8);

impl Scopes {
    /// Whether `scope` is in the set.
    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// The set with `scope` added.
    pub fn with(self, scope: Scope) -> Self {
        Self(self.0 | scope.bit())
    }

    /// Parses `ingest,read` (the keys file's form).
    ///
    /// # Errors
    /// A sentence naming the unknown scope, or saying the list is empty.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut scopes = Self::default();
        for name in list.split(',') {
            let scope = Scope::parse(name).ok_or_else(|| {
                format!("unknown scope {name:?}; the scopes are ingest, read, delete and metrics")
            })?;
            scopes = scopes.with(scope);
        }
        Ok(scopes)
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for scope in Scope::ALL.into_iter().filter(|s| self.contains(*s)) {
            if !first {
                f.write_str(",")?;
            }
            f.write_str(scope.as_str())?;
            first = false;
        }
        Ok(())
    }
}

/// One API key as the server knows it: a name (for logs and to own idempotency keys)
/// and its scopes. The token is not kept.
#[derive(Debug, PartialEq, Eq)]
pub struct ApiKey {
    /// The key's name: 1 to 64 of `A-Z a-z 0-9 . _ -`.
    pub name: Box<str>,
    /// What it may do.
    pub scopes: Scopes,
}

/// The longest key name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Checks a key name: 1 to [`MAX_NAME_LEN`] of `A-Z a-z 0-9 . _ -`. The name cannot hold
/// a space, so `"<name> <idempotency key>"` is unambiguous.
///
/// # Errors
/// A sentence saying which rule the name breaks.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!(
            "a key name has 1 to {MAX_NAME_LEN} characters, {name:?} has {}",
            name.len()
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(format!(
            "key name {name:?} may only hold letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// Why a keys file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be read.
    #[error("cannot read the API keys file {path}: {message}")]
    Read {
        /// The file.
        path: String,
        /// What the OS said.
        message: String,
    },
    /// A line breaks the format.
    #[error("API keys file, line {line}: {message}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
}

/// The keys of one version of the file, by the SHA-256 of their token.
#[derive(Debug, Default)]
pub struct KeySet {
    by_digest: HashMap<[u8; 32], Arc<ApiKey>, foldhash::fast::RandomState>,
}

impl KeySet {
    /// Parses the keys file's text.
    ///
    /// # Errors
    /// [`KeyFileError::Line`] for the first line that breaks the format, repeats a name
    /// or repeats a token hash.
    pub fn parse(text: &str) -> Result<Self, KeyFileError> {
        let mut set = Self::default();
        let mut names: HashMap<&str, usize> = HashMap::new();
        for (n, raw) in text.lines().enumerate() {
            let line = n + 1;
            let err = |message: String| KeyFileError::Line { line, message };
            let content = strip_comment(raw).trim();
            if content.is_empty() {
                continue;
            }
            let fields: Vec<&str> = content.split_whitespace().collect();
            let [name, scopes, hash] = fields[..] else {
                return Err(err(format!(
                    "expected `NAME SCOPES sha256:HEX`, found {} fields",
                    fields.len()
                )));
            };
            check_name(name).map_err(err)?;
            let scopes = Scopes::parse(scopes).map_err(err)?;
            let digest = parse_digest(hash).map_err(err)?;
            if let Some(first) = names.insert(name, line) {
                return Err(err(format!("key name {name:?} is already used on line {first}")));
            }
            let key = Arc::new(ApiKey {
                name: name.into(),
                scopes,
            });
            if let Some(other) = set.by_digest.insert(digest, key) {
                return Err(err(format!(
                    "this token hash is already the hash of key {:?}",
                    other.name
                )));
            }
        }
        Ok(set)
    }

    /// The key whose token is `token`.
    pub fn find(&self, token: &[u8]) -> Option<&Arc<ApiKey>> {
        self.by_digest.get(&digest(token))
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    /// Whether there is no key (every protected route then answers 401).
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }
}

fn strip_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'#' && (i == 0 || bytes[i - 1].is_ascii_whitespace()) {
            return &line[..i];
        }
    }
    line
}

fn parse_digest(field: &str) -> Result<[u8; 32], String> {
    let hex = field
        .strip_prefix("sha256:")
        .ok_or_else(|| "the third field must be `sha256:` and the token's SHA-256 in hex".to_owned())?;
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return Err(format!(
            "a SHA-256 is 64 hex digits, this one has {}",
            bytes.len()
        ));
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = char::from(pair[0]).to_digit(16);
        let lo = char::from(pair[1]).to_digit(16);
        match (hi, lo) {
            (Some(hi), Some(lo)) => out[i] = (hi * 16 + lo) as u8,
            _ => return Err("the SHA-256 holds a character that is not a hex digit".to_owned()),
        }
    }
    Ok(out)
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// The keys in force, swapped whole when the file is reloaded: a request sees the old set
/// or the new one, never a mix, and reloading takes no lock a request waits on.
pub struct Keyring {
    keys: ArcSwap<KeySet>,
    file: WatchedFiles,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("keys", &self.keys.load().len())
            .field("file", &self.file)
            .finish()
    }
}

impl Keyring {
    /// Reads and parses the keys file at start-up.
    ///
    /// # Errors
    /// [`KeyFileError`] when the file cannot be read or parsed: the server must not start
    /// with keys other than the ones asked for.
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        let file = WatchedFiles::new(vec![path.to_owned()]);
        let contents = file.read_all().map_err(|e| read_error(path, &e))?;
        let keys = parse_utf8(&contents[0])?;
        Ok(Self {
            keys: ArcSwap::from_pointee(keys),
            file,
        })
    }

    /// A keyring over `keys` that no file backs (tests, benches).
    pub fn from_keys(keys: KeySet) -> Self {
        Self {
            keys: ArcSwap::from_pointee(keys),
            file: WatchedFiles::new(Vec::new()),
        }
    }

    /// The key whose token is `token`: one SHA-256 and one map lookup.
    pub fn authenticate(&self, token: &[u8]) -> Option<Arc<ApiKey>> {
        self.keys.load().find(token).cloned()
    }

    /// How many keys are in force.
    pub fn len(&self) -> usize {
        self.keys.load().len()
    }

    /// Whether no key is in force.
    pub fn is_empty(&self) -> bool {
        self.keys.load().is_empty()
    }

    /// The path of the keys file.
    pub fn path(&self) -> Option<&PathBuf> {
        self.file.paths().first()
    }
}

impl Reload for Keyring {
    fn what(&self) -> &'static str {
        "api_keys"
    }

    fn reload(&self, force: bool) -> ReloadOutcome {
        let Some(contents) = self.file.read(force) else {
            return ReloadOutcome::Unchanged;
        };
        let path = self.path().map_or_else(String::new, |p| p.display().to_string());
        let parsed = contents
            .map_err(|e| KeyFileError::Read {
                path: path.clone(),
                message: e.to_string(),
            })
            .and_then(|c| parse_utf8(&c[0]));
        match parsed {
            Ok(keys) => {
                let summary = format!("{} API keys from {path}", keys.len());
                self.keys.store(Arc::new(keys));
                ReloadOutcome::Reloaded(summary)
            }
            Err(e) => ReloadOutcome::Failed(e.to_string()),
        }
    }
}

fn read_error(path: &Path, e: &std::io::Error) -> KeyFileError {
    KeyFileError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn parse_utf8(bytes: &[u8]) -> Result<KeySet, KeyFileError> {
    let text = std::str::from_utf8(bytes).map_err(|e| KeyFileError::Line {
        line: bytes[..e.valid_up_to()].iter().filter(|&&b| b == b'\n').count() + 1,
        message: "not UTF-8 text".to_owned(),
    })?;
    KeySet::parse(text)
}

/// A freshly generated key: the token to hand to the client, once, and the line for the
/// keys file.
#[derive(Debug)]
pub struct NewKey {
    /// `sst_` and 64 hex digits (256 random bits from the OS).
    pub token: String,
    /// `NAME SCOPES sha256:HEX`.
    pub line: String,
}

/// Makes a new key called `name` with `scopes` (names as in the keys file).
///
/// # Errors
/// A sentence when the name or a scope is invalid, no scope is given, or the OS has no
/// randomness to give.
pub fn generate(name: &str, scopes: &[String]) -> Result<NewKey, String> {
    check_name(name)?;
    if scopes.is_empty() {
        return Err("give at least one scope: ingest, read, delete, metrics".to_owned());
    }
    let scopes = Scopes::parse(&scopes.join(","))?;
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| format!("no randomness from the OS: {e}"))?;
    let token = format!("sst_{}", hex(&secret));
    let line = format!("{name} {scopes} sha256:{}", hex(&digest(token.as_bytes())));
    Ok(NewKey { token, line })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_for(name: &str, scopes: &str, token: &str) -> String {
        format!("{name} {scopes} sha256:{}", hex(&digest(token.as_bytes())))
    }

    #[test]
    fn parses_keys_comments_and_blank_lines() {
        let text = format!(
            "# fleet and dashboards\n\n{}   # EU devices\n  {}\n",
            line_for("fleet-eu", "ingest", "t1"),
            line_for("ops", "read,delete,metrics", "t2")
        );
        let set = KeySet::parse(&text).unwrap();
        assert_eq!(set.len(), 2);
        let fleet = set.find(b"t1").unwrap();
        assert_eq!(&*fleet.name, "fleet-eu");
        assert!(fleet.scopes.contains(Scope::Ingest) && !fleet.scopes.contains(Scope::Read));
        let ops = set.find(b"t2").unwrap();
        assert_eq!(ops.scopes.to_string(), "read,delete,metrics");
        assert!(set.find(b"t3").is_none());
        assert!(set.find(b"").is_none());
    }

    #[test]
    fn rejects_broken_lines_with_their_number() {
        let good = line_for("a", "read", "t");
        let cases = [
            ("a read", "expected `NAME SCOPES sha256:HEX`"),
            ("a read deadbeef", "sha256:"),
            ("a read sha256:abc", "64 hex digits"),
            (&*format!("a read sha256:{}", "g".repeat(64)), "not a hex digit"),
            (&*line_for("a", "write", "t"), "unknown scope \"write\""),
            (&*line_for("a", "read,", "t"), "unknown scope \"\""),
            (&*line_for("a b", "read", "t"), "expected"),
            (&*line_for("ä", "read", "t"), "may only hold"),
            (&*line_for(&"n".repeat(65), "read", "t"), "1 to 64"),
            (&*line_for("a", "read", "other"), "already used on line 1"),
            (&*line_for("b", "read", "t"), "already the hash of key \"a\""),
        ];
        for (bad, why) in cases {
            let text = format!("{good}\n{bad}\n");
            let err = KeySet::parse(&text).unwrap_err().to_string();
            assert!(err.starts_with("API keys file, line 2: "), "{bad}: {err}");
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn an_empty_file_is_an_empty_set() {
        assert!(KeySet::parse("# nobody yet\n").unwrap().is_empty());
    }

    #[test]
    fn generated_keys_are_fresh_and_their_line_finds_the_token() {
        let a = generate("fleet-eu", &["ingest".into(), "read".into()]).unwrap();
        let b = generate("fleet-eu", &["ingest".into()]).unwrap();
        assert_ne!(a.token, b.token);
        assert!(a.token.starts_with("sst_") && a.token.len() == 68);
        assert!(a.line.starts_with("fleet-eu ingest,read sha256:"), "{}", a.line);
        assert!(
            !a.line.contains(&a.token[4..]),
            "the line must not hold the token"
        );
        let set = KeySet::parse(&a.line).unwrap();
        assert_eq!(&*set.find(a.token.as_bytes()).unwrap().name, "fleet-eu");
        assert!(generate("x", &[]).is_err());
        assert!(generate("x y", &["read".into()]).is_err());
        assert!(generate("x", &["admin".into()]).is_err());
    }
}

//! `flashgate verify` and `flashgate transparency …`: a drop's public log read from its URL
//! or from a folder, verified (`flashgate_tlog::verify`), or copied to a folder any static
//! host can serve.

use anyhow::{Context, Result, bail};
use flashgate_tlog::paths;
use flashgate_tlog::verify::{Folder, Options, Report, Source};
use std::path::{Path, PathBuf};

/// A log served over HTTP(S) under a prefix (`https://drops.example/transparency/<id>`).
#[derive(Debug, Clone)]
pub struct Http {
    prefix: String,
    client: reqwest::Client,
}

impl Http {
    pub fn new(prefix: &str) -> Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .user_agent(concat!("flashgate-verify/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { prefix: prefix.trim_end_matches('/').to_owned(), client })
    }
}

impl Source for Http {
    async fn get(&self, path: &str) -> Result<Option<Vec<u8>>> {
        let url = format!("{}/{path}", self.prefix);
        let mut tries = 0;
        loop {
            tries += 1;
            let answer = self.client.get(&url).send().await;
            match answer {
                Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => return Ok(None),
                Ok(r) if r.status().is_success() => return Ok(Some(r.bytes().await?.to_vec())),
                // A busy edge or origin says when to come back; three tries, then give up.
                Ok(r)
                    if (r.status().is_server_error() || r.status().as_u16() == 429)
                        && tries < 3 => {}
                Ok(r) => bail!("GET {url}: {}", r.status()),
                Err(_) if tries < 3 => {}
                Err(e) => return Err(e).with_context(|| format!("GET {url}")),
            }
            tokio::time::sleep(std::time::Duration::from_millis(500 * tries)).await;
        }
    }
}

/// Where a log is: a folder if `location` is one, else a URL prefix.
pub enum Location {
    Folder(Folder),
    Http(Http),
}

impl Location {
    pub fn parse(location: &str) -> Result<Self> {
        if location.starts_with("http://") || location.starts_with("https://") {
            Ok(Self::Http(Http::new(location)?))
        } else if Path::new(location).is_dir() {
            Ok(Self::Folder(Folder(PathBuf::from(location))))
        } else {
            bail!("{location} is neither an http(s) URL nor a folder")
        }
    }

    pub async fn verify(&self, options: &Options) -> Result<Report> {
        match self {
            Self::Folder(f) => flashgate_tlog::verify::verify(f, options).await,
            Self::Http(h) => flashgate_tlog::verify::verify(h, options).await,
        }
    }
}

/// Copies every file of the log at `prefix` (its metadata, newest checkpoint, tiles and
/// entry bundles) into `dir`; returns how many entries the checkpoint covers.
pub async fn export(prefix: &str, dir: &Path) -> Result<u64> {
    let source = Http::new(prefix)?;
    let note = source.get("checkpoint").await?.context("the log has no checkpoint yet")?;
    let metadata = source.get("metadata.json").await?.context("the log has no metadata.json")?;
    let size = flashgate_tlog::checkpoint::size_of(&note)?;
    let write = |path: &str, bytes: &[u8]| -> Result<()> {
        let file = dir.join(path);
        std::fs::create_dir_all(file.parent().expect("a file in the folder"))?;
        std::fs::write(&file, bytes).with_context(|| format!("writing {}", file.display()))
    };
    write("metadata.json", &metadata)?;
    for tile in paths::tiles(size) {
        let path = tile.path();
        let bytes = source.get(&path).await?.with_context(|| format!("the log has no {path}"))?;
        write(&path, &bytes)?;
    }
    // Last: a folder with a checkpoint has every file the checkpoint needs.
    write("checkpoint", &note)?;
    Ok(size)
}

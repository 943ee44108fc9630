//! `ocilambda push`: the image `build` wrote (an OCI layout) → a registry repository.
//!
//! This module resolves where to push (REF, else the `repository` setting), reads the
//! layout and shows progress; the transfer itself is [`crate::sink::registry`]. The
//! only stdout line, printed by `main`, is `REGISTRY/REPOSITORY@sha256:…`.

use crate::cache::Cache;
use crate::config::Settings;
use crate::error::hint;
use crate::output;
use crate::registry::{Client, Progress, RegistryError};
use crate::report::{Event, Reporter};
use crate::sink::registry::{self as sink, Action, Blob, BlobReport, Destination, Observer};
use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, Clone, Default)]
pub struct PushRequest {
    /// Whose configuration and layout to use.
    pub project_dir: PathBuf,
    /// `REGISTRY/REPOSITORY[:TAG]`; default: the `repository` setting.
    pub reference: Option<String>,
    /// Default: `<project>/.ocilambda/image`.
    pub layout: Option<PathBuf>,
    /// Extra tags besides the reference's own.
    pub tags: Vec<String>,
    pub jobs: usize,
    pub insecure_registries: Vec<String>,
    pub ca_cert: Option<PathBuf>,
    /// Settings from the environment (`OCILAMBDA_*`), above pyproject.toml.
    pub env: Settings,
    /// The cache directory (the command layer's `Environment::cache_dir`).
    pub cache_dir: PathBuf,
    /// Create a missing ECR repository; None: the `create-repository` setting.
    pub create_repository: Option<bool>,
    /// Tags of a repository created here are immutable.
    pub immutable_tags: bool,
    /// How to reach AWS for ECR tokens and repositories.
    pub aws: crate::aws::AwsOptions,
    /// The AWS configuration, when the caller has loaded it already (`deploy`).
    pub aws_loaded: Option<crate::aws::Aws>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PushSummary {
    /// `REGISTRY/REPOSITORY@sha256:…`, for `aws lambda update-function-code --image-uri`.
    pub reference: String,
    pub registry: String,
    pub repository: String,
    pub digest: String,
    pub tags: Vec<String>,
    pub up_to_date: bool,
    pub blobs: Vec<BlobReport>,
    pub uploaded_bytes: u64,
    pub downloaded_bytes: u64,
    pub millis: u64,
}

/// The `repository` setting: the environment's, else `[tool.ocilambda] repository` in the
/// project's pyproject.toml (read by the one settings reader, without loading the project:
/// pushing needs no uv.lock).
fn configured_repository(req: &PushRequest) -> Result<Option<String>> {
    Ok(settings(req)?.repository)
}

/// The project's settings under the environment's.
fn settings(req: &PushRequest) -> Result<Settings> {
    let from_file = crate::config::read_pyproject(&req.project_dir)?;
    Ok(from_file.overlaid_with(req.env.clone()))
}

/// No REF given and no `repository` setting; the command layer says where to set one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoRepository;

impl std::fmt::Display for NoRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no repository to push to")
    }
}

impl std::error::Error for NoRepository {}

/// Docker's tag grammar.
fn check_tag(tag: &str) -> Result<()> {
    if !crate::registry::name::valid_tag(tag) {
        bail!(hint(
            format!("invalid tag `{tag}`"),
            "a tag is 1-128 letters, digits, `_`, `.` or `-`, not starting with `.` or `-`"
        ));
    }
    Ok(())
}

/// Where to push, from REF or the configuration.
pub fn destination(req: &PushRequest) -> Result<Destination> {
    let text = match &req.reference {
        Some(r) => r.clone(),
        None => configured_repository(req)?.ok_or(NoRepository)?,
    };
    let reference = crate::registry::name::parse_checked(&text)?;
    if reference.digest.is_some() {
        bail!(hint(
            format!("`{text}` names a digest; a push can only write tags"),
            "drop the @sha256:… part: the pushed digest is printed on success"
        ));
    }
    let mut tags = vec![reference.tag.unwrap_or_else(|| "latest".to_string())];
    for tag in &req.tags {
        check_tag(tag)?;
        if !tags.contains(tag) {
            tags.push(tag.clone());
        }
    }
    Ok(Destination {
        registry: reference.registry,
        repository: reference.repository,
        tags,
    })
}

/// The layout to push: the one given, else the one `build` writes for the project.
pub fn layout(req: &PushRequest) -> PathBuf {
    req.layout
        .clone()
        .unwrap_or_else(|| req.project_dir.join(".ocilambda").join("image"))
}

pub async fn push(req: PushRequest, reporter: Arc<dyn Reporter>) -> Result<PushSummary> {
    let started = Instant::now();
    let dest = destination(&req)?;
    let layout = layout(&req);
    let cache = Cache::open(&req.cache_dir, reporter.clone())?;
    let image = sink::read_layout(&layout)?;
    let client = Client::new(&req.insecure_registries, req.ca_cert.as_deref())?.with_aws(
        req.aws.clone(),
        req.aws_loaded.clone(),
        Some(token_cache(&cache)),
    );
    let create = match req.create_repository {
        Some(c) => c,
        None => settings(&req)?.create_repository.unwrap_or(false),
    };
    let name = format!("{}/{}", dest.registry, dest.repository);
    let blobs = Blobs(&*reporter);
    let mut pushed = sink::push(&client, &cache, &image, &dest, req.jobs, &blobs).await;
    // Only ECR repositories are created: elsewhere (ghcr.io, a private registry) an ECR
    // repository of the caller's AWS account would be made for nothing.
    if create
        && let Err(e) = &pushed
        && let Some(RegistryError::RepositoryUnknown { .. }) = crate::registry::find_error(e)
        && client.is_ecr_registry(&dest.registry).await?
    {
        client
            .ecr()
            .create_repository(&dest.registry, &dest.repository, req.immutable_tags)
            .await?;
        reporter.event(Event::Step(format!("Created repository {name}")));
        pushed = sink::push(&client, &cache, &image, &dest, req.jobs, &blobs).await;
    }
    let outcome = pushed.with_context(|| format!("pushing {} to {name}", layout.display()))?;
    let (uploaded, downloaded) = report(
        &outcome,
        &dest,
        &name,
        &image.manifest_digest,
        started,
        &*reporter,
    );
    for artifact in sink::push_referrers(&client, &cache, &image, &dest).await? {
        reporter.event(Event::Step(format!(
            "Attached {artifact} to {}",
            output::short_digest(&image.manifest_digest)
        )));
    }
    Ok(PushSummary {
        reference: format!("{name}@{}", image.manifest_digest),
        registry: dest.registry,
        repository: dest.repository,
        digest: image.manifest_digest,
        tags: dest.tags,
        up_to_date: outcome.up_to_date,
        blobs: outcome.blobs,
        uploaded_bytes: uploaded,
        downloaded_bytes: downloaded,
        millis: started.elapsed().as_millis() as u64,
    })
}

/// Say what the push did (up to date, or what it sent and tagged); the bytes uploaded and
/// the bytes fetched from the base's registry on the way.
fn report(
    outcome: &sink::Outcome,
    dest: &Destination,
    name: &str,
    digest: &str,
    started: Instant,
    reporter: &dyn Reporter,
) -> (u64, u64) {
    let mut uploaded = 0;
    let mut downloaded = 0;
    let mut sent = 0;
    for b in &outcome.blobs {
        if let Action::Uploaded { downloaded: d } = b.action {
            uploaded += b.size;
            downloaded += d;
            sent += 1;
        }
    }
    let tag_list = |tags: &[String]| {
        tags.iter()
            .map(|t| format!("{name}:{t}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if outcome.up_to_date {
        reporter.event(Event::Step(format!(
            "{} is up to date ({}) in {}",
            tag_list(&dest.tags),
            output::short_digest(digest),
            output::duration(started.elapsed())
        )));
    } else {
        if !outcome.blobs.is_empty() {
            reporter.event(Event::Step(format!(
                "Pushed {} of {} blobs ({}) in {}",
                sent,
                outcome.blobs.len(),
                output::size(uploaded),
                output::duration(started.elapsed())
            )));
        }
        reporter.event(Event::Step(format!(
            "Tagged {} ({})",
            tag_list(&outcome.tagged),
            output::short_digest(digest)
        )));
    }
    (uploaded, downloaded)
}

/// Where ECR tokens are kept between commands (each file 0600, see
/// [`crate::registry::ecr`]).
pub fn token_cache(cache: &Cache) -> PathBuf {
    cache.root().join("ecr-tokens")
}

/// Push's blob events, as the caller's [`Reporter`] takes them: a progress callback per
/// upload, keyed by digest, and one summary line per blob.
struct Blobs<'a>(&'a dyn Reporter);

fn describe(report: &BlobReport) -> String {
    let what = format!(
        "{} {} ({})",
        report.kind.label(),
        output::short_digest(&report.digest),
        output::size(report.size)
    );
    let took = output::duration(std::time::Duration::from_millis(report.millis));
    match &report.action {
        Action::Skipped => format!("Skipped {what}: already there"),
        Action::Mounted { from } => format!("Mounted {what} from {from}"),
        Action::Uploaded { downloaded } if *downloaded > 0 => {
            format!("Uploaded {what}, streamed from the base registry, in {took}")
        }
        Action::Uploaded { .. } => format!("Uploaded {what} in {took}"),
    }
}

impl Observer for Blobs<'_> {
    fn uploading(&self, blob: &Blob) -> Progress {
        let label = format!(
            "{} {}",
            blob.kind.label(),
            output::short_digest(&blob.digest)
        );
        self.0.progress(&blob.digest, &label, blob.size)
    }

    fn finished(&self, report: &BlobReport) {
        self.0.event(Event::Transferred {
            key: report.digest.clone(),
            summary: describe(report),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(reference: &str) -> PushRequest {
        PushRequest {
            project_dir: PathBuf::from("/nonexistent"),
            reference: Some(reference.into()),
            jobs: 4,
            ..Default::default()
        }
    }

    #[test]
    fn reference_gives_registry_repository_and_tag() {
        let d = destination(&request("127.0.0.1:5000/team/app:v1")).unwrap();
        assert_eq!(d.registry, "127.0.0.1:5000");
        assert_eq!(d.repository, "team/app");
        assert_eq!(d.tags, ["v1"]);
        let mut req = request("123456789012.dkr.ecr.us-east-1.amazonaws.com/fn");
        req.tags = vec!["abc123".into(), "latest".into()];
        let d = destination(&req).unwrap();
        assert_eq!(d.tags, ["latest", "abc123"]);
    }

    #[test]
    fn bad_references_and_tags_are_refused_with_a_hint() {
        for bad in ["127.0.0.1:5000/App Name", "reg.example/app::x"] {
            let err = destination(&request(bad)).unwrap_err();
            assert!(crate::diagnostics::hint(&err).is_some(), "{bad}");
        }
        let digest = format!("reg.example/app@sha256:{}", "a".repeat(64));
        let err = destination(&request(&digest)).unwrap_err();
        assert!(err.to_string().contains("names a digest"));
        let mut req = request("reg.example/app");
        req.tags = vec!["-bad".into()];
        assert!(destination(&req).is_err());
    }

    #[test]
    fn push_reads_pyproject_as_build_does() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("pyproject.toml"),
            "[project]\nname='x'\n[tool]\nocilambda = 'reg.example/fn'\n",
        )
        .unwrap();
        let req = PushRequest {
            project_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        let err = destination(&req).unwrap_err();
        assert!(err.to_string().contains("must be a table"), "{err}");
        std::fs::write(
            dir.path().join("pyproject.toml"),
            "[project]\nname='x'\n[tool.ocilambda]\nrepositry = 'reg.example/fn'\n",
        )
        .unwrap();
        let err = destination(&req).unwrap_err();
        assert!(err.to_string().contains("unknown key `repositry`"), "{err}");
    }

    #[test]
    fn repository_comes_from_pyproject_when_no_ref() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("pyproject.toml"),
            "[project]\nname='x'\n[tool.ocilambda]\nrepository = 'reg.example/fn:prod'\n",
        )
        .unwrap();
        let req = PushRequest {
            project_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        let d = destination(&req).unwrap();
        assert_eq!(
            (d.registry.as_str(), d.tags[0].as_str()),
            ("reg.example", "prod")
        );
        // The environment's value wins over pyproject's.
        let req = PushRequest {
            env: Settings {
                repository: Some("other.example/fn".into()),
                ..Default::default()
            },
            ..req
        };
        assert_eq!(destination(&req).unwrap().registry, "other.example");
        let empty = tempfile::tempdir().unwrap();
        let req = PushRequest {
            project_dir: empty.path().to_path_buf(),
            ..Default::default()
        };
        let err = destination(&req).unwrap_err();
        assert_eq!(err.to_string(), "no repository to push to");
    }
}

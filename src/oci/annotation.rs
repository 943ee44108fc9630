//! Annotation keys ocilambda reads and writes. The provenance keys record how an image
//! was built, so `verify` can rebuild it and explain a mismatch; nothing machine-specific
//! goes in them (no paths, hosts, users).

/// The tag name of an image in an OCI layout's `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
pub const BASE_NAME: &str = "org.opencontainers.image.base.name";
pub const BASE_DIGEST: &str = "org.opencontainers.image.base.digest";
pub const CREATED: &str = "org.opencontainers.image.created";
pub const REVISION: &str = "org.opencontainers.image.revision";
pub const SOURCE: &str = "org.opencontainers.image.source";
pub const VERSION: &str = "dev.ocilambda.version";
pub const LOCK: &str = "dev.ocilambda.uv-lock.sha256";
pub const HANDLER: &str = "dev.ocilambda.handler";
pub const PYTHON: &str = "dev.ocilambda.python";
pub const UV: &str = "dev.ocilambda.uv";
pub const BYTECODE: &str = "dev.ocilambda.bytecode";
pub const SETTINGS: &str = "dev.ocilambda.settings.sha256";
/// The app-file and selection settings as canonical JSON, only when any differs from the
/// default (so default builds keep their bytes): what `verify` replays.
pub const CHOICES: &str = "dev.ocilambda.settings";

//! The command layer's half of the library: what the CLI shows. [`terminal`] implements
//! the library's [`crate::report::Reporter`] on stderr in uv's style; [`audit`] renders
//! what the audit commands return, as text or JSON, for stdout; [`docs`] renders the CLI
//! itself as shell completions and man pages. Library modules below never print; the
//! hints for their errors live in [`crate::diagnostics`].

pub mod audit;
pub mod docs;
pub mod terminal;

//! The `ocilambda` command line: parses arguments, calls the library, prints the result,
//! and maps errors to exit codes (0 success, 1 negative verdict, 2 error). Nothing else.

use clap::{Args, Parser, Subcommand};
use ocilambda::audit::Access;
use ocilambda::commands::audit::Rendered;
use ocilambda::commands::terminal::{self, Terminal};
use ocilambda::config::{self, Environment, Settings};
use ocilambda::target::{Arch, PyVersion};
use ocilambda::{build, deploy, error, login, package, push};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "ocilambda",
    // The package version, and the commit and its date when built from a checkout (build.rs).
    version = env!("VERSION_TEXT"),
    about = "Build AWS Lambda Python images and zips from a uv project, without Docker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build an OCI image layout for Lambda from a uv project.
    Build(BuildArgs),
    /// Build a Lambda zip archive (or, with --layer, a layer zip and an app zip).
    Zip(ZipArgs),
    /// Push the built image to a registry; prints REGISTRY/REPOSITORY@sha256:DIGEST.
    Push(PushArgs),
    /// Build and deploy to a Lambda function (image or zip), skipping unchanged code;
    /// prints the deployed image reference or CodeSha256.
    Deploy(DeployArgs),
    /// Store registry credentials in the Docker config, as `docker login` does.
    Login(LoginArgs),
    /// Remove stored registry credentials.
    Logout(LogoutArgs),
    /// Show an image: platform, handler, base, layers (IMAGE: layout dir, oci:DIR or registry ref).
    Inspect(InspectArgs),
    /// Compare two images down to single files; exit 0 identical, 1 different.
    Diff(DiffArgs),
    /// Check an image against what Lambda accepts; exit 1 when it finds errors (warnings alone exit 0).
    Lint(LintArgs),
    /// Run the built image locally in a sandbox, as Lambda would; prints the response.
    Invoke(InvokeArgs),
    /// Rebuild the project as the image records and compare; exit 0 reproducible, 1 not.
    Verify(VerifyArgs),
    /// Print a shell completion script, e.g. `ocilambda completions bash > ~/.local/share/bash-completion/completions/ocilambda`.
    Completions(CompletionsArgs),
    /// Print the man page of ocilambda, or of one of its commands (`ocilambda manpage build`).
    Manpage(ManpageArgs),
}

#[derive(Args)]
struct CompletionsArgs {
    #[arg(value_enum)]
    shell: ocilambda::commands::docs::Shell,
}

#[derive(Args)]
struct ManpageArgs {
    /// The command whose page to print (its page is `ocilambda-COMMAND(1)`).
    #[arg(value_name = "COMMAND")]
    command: Option<String>,
}

/// `completions` and `manpage`: the CLI rendered by the command layer.
fn docs_command(command: Command) -> anyhow::Result<ExitCode> {
    use clap::CommandFactory;
    use ocilambda::commands::docs;
    let mut out = Vec::new();
    match command {
        Command::Completions(a) => docs::completions(Cli::command(), a.shell, &mut out),
        Command::Manpage(a) => {
            match docs::manpage(Cli::command(), a.command.as_deref(), &mut out) {
                Some(rendered) => rendered?,
                None => {
                    // A wrong operand is a usage error like any other: clap's words, exit 2.
                    let known = docs::subcommands(&Cli::command()).join(", ");
                    let what = a.command.unwrap_or_default();
                    let e = Cli::command().error(
                        clap::error::ErrorKind::InvalidValue,
                        format!("no command `{what}` has a man page; one of: {known}"),
                    );
                    return Ok(usage_error(&e));
                }
            }
        }
        _ => unreachable!("not a docs command"),
    }
    emit(&String::from_utf8_lossy(&out));
    Ok(ExitCode::SUCCESS)
}

/// Where settings come from, shown under the help of every command that takes them.
const PRECEDENCE: &str = "Settings: each flag marked [env: OCILAMBDA_<NAME>] is also an environment variable (lists comma-separated) and a `<name>` key of [tool.ocilambda] in pyproject.toml; precedence: flag > environment > pyproject.toml > default. SOURCE_DATE_EPOCH sets the image timestamps [default: 0]; SSL_CERT_FILE is an extra CA file, as --ca-cert.";

#[derive(Args)]
struct VerifyArgs {
    image: String,
    /// The uv project to rebuild [default: current directory].
    project_dir: Option<PathBuf>,
    #[command(flatten)]
    project: ProjectArg,
    #[command(flatten)]
    settings: SettingArgs,
    #[command(flatten)]
    select: SelectArgs,
    #[command(flatten)]
    network: NetworkArgs,
    #[command(flatten)]
    audit: AuditArgs,
}

/// Fetching the base and packages (`build`, `verify`).
#[derive(Args)]
struct NetworkArgs {
    /// Resolve the base tag again even if a recent resolution is cached.
    #[arg(long, conflicts_with = "offline")]
    pull: bool,
    /// Never touch the network (base and packages must be cached).
    #[arg(long)]
    offline: bool,
}

/// How to reach registries (every command that does).
#[derive(Args)]
struct RegistryArgs {
    /// Allow plain HTTP for this registry host; repeatable.
    #[arg(long)]
    insecure_registry: Vec<String>,
    /// An extra CA certificate (PEM) to trust [env: SSL_CERT_FILE].
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
}

impl RegistryArgs {
    /// The CA file: the flag, else SSL_CERT_FILE.
    fn ca_cert(&self, env: &Environment) -> Option<PathBuf> {
        self.ca_cert
            .clone()
            .or_else(|| env.ca_cert().map(Into::into))
    }
}

/// How to reach AWS (ECR tokens, repositories, Lambda); credentials come from the
/// standard chain.
#[derive(Args)]
struct AwsArgs {
    /// The AWS region [default: the chain's: AWS_REGION, the profile's region].
    #[arg(long)]
    region: Option<String>,
    /// The profile of the shared AWS config and credentials files [default: AWS_PROFILE].
    #[arg(long)]
    profile: Option<String>,
}

impl AwsArgs {
    fn options(&self) -> ocilambda::aws::AwsOptions {
        ocilambda::aws::AwsOptions {
            region: self.region.clone(),
            profile: self.profile.clone(),
        }
    }
}

/// Creating a missing ECR repository (`push`, `deploy`).
#[derive(Args)]
struct CreateRepositoryArgs {
    /// Create the ECR repository when the registry says it does not exist (scan on push
    /// on) [env: OCILAMBDA_CREATE_REPOSITORY].
    #[arg(long)]
    create_repository: bool,
    /// A repository created with --create-repository gets immutable tags.
    #[arg(long, requires = "create_repository")]
    immutable_tags: bool,
}

impl CreateRepositoryArgs {
    fn setting(&self) -> Option<bool> {
        self.create_repository.then_some(true)
    }
}

#[derive(Args)]
struct QuietArg {
    /// No progress output (warnings and errors are still printed).
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Args)]
struct AuditArgs {
    #[command(flatten)]
    registry: RegistryArgs,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    quiet: QuietArg,
}

impl AuditArgs {
    /// The registry access the audit commands take.
    fn access<'a>(
        &'a self,
        ca_cert: &'a Option<PathBuf>,
        cache_dir: &'a std::path::Path,
    ) -> Access<'a> {
        Access {
            insecure: &self.registry.insecure_registry,
            ca_cert: ca_cert.as_deref(),
            cache_dir,
        }
    }
}

/// The project as a flag, for the commands that take it positionally too.
#[derive(Args)]
struct ProjectArg {
    /// The uv project, as the positional PROJECT_DIR.
    #[arg(long = "project", value_name = "DIR", conflicts_with = "project_dir")]
    project: Option<PathBuf>,
}

/// PROJECT_DIR or --project, else the current directory.
fn project_dir(positional: Option<PathBuf>, flag: ProjectArg) -> PathBuf {
    positional
        .or(flag.project)
        .unwrap_or_else(|| PathBuf::from("."))
}

#[derive(Args)]
struct InspectArgs {
    image: String,
    /// List the paths in each layer.
    #[arg(long)]
    files: bool,
    #[command(flatten)]
    audit: AuditArgs,
}

#[derive(Args)]
struct DiffArgs {
    image_a: String,
    image_b: String,
    #[command(flatten)]
    audit: AuditArgs,
}

#[derive(Args)]
struct LintArgs {
    image: String,
    #[command(flatten)]
    audit: AuditArgs,
}

/// Print an audit report; its verdict picks the exit code.
fn report(r: Rendered) -> ExitCode {
    emit(&r.stdout);
    if r.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `--arch`: typed before anything is read.
fn parse_arch(s: &str) -> Result<Arch, ocilambda::oci::platform::UnknownArch> {
    s.parse()
}

/// `--python-version`: typed before anything is read, keeping the kind of a bad version
/// for its hint.
fn parse_python(s: &str) -> Result<PyVersion, Box<dyn std::error::Error + Send + Sync>> {
    s.parse::<PyVersion>()
        .map_err(|e| match e.downcast::<ocilambda::target::VersionError>() {
            Ok(v) => Box::new(v) as Box<dyn std::error::Error + Send + Sync>,
            Err(e) => e.into(),
        })
}

fn parse_size(s: &str) -> Result<u64, String> {
    config::parse_size(s).map_err(|e| e.to_string())
}

fn parse_ttl(s: &str) -> Result<std::time::Duration, String> {
    config::parse_duration(s).map_err(|e| e.to_string())
}

/// The settings of an image build (`build`, `verify`).
#[derive(Args)]
struct SettingArgs {
    /// Base image [default: public.ecr.aws/lambda/python:<python-version>] [env: OCILAMBDA_BASE].
    #[arg(long)]
    base: Option<String>,
    #[command(flatten)]
    function: FunctionArgs,
    /// How long a cached base tag resolution is trusted, e.g. 24h, 30m, 0 [default: 24h]
    /// [env: OCILAMBDA_BASE_TTL].
    #[arg(long, value_parser = parse_ttl)]
    base_ttl: Option<std::time::Duration>,
}

impl SettingArgs {
    fn settings(&self) -> Settings {
        Settings {
            base: self.base.clone(),
            base_ttl: self.base_ttl,
            ..self.function.settings()
        }
    }
}

/// The settings images and zips share: the function's runtime, handler and files.
#[derive(Args)]
struct FunctionArgs {
    /// Target Python version (3.10-3.14) [env: OCILAMBDA_PYTHON_VERSION].
    #[arg(long, value_name = "X.Y", value_parser = parse_python)]
    python_version: Option<PyVersion>,
    /// The Lambda handler, MODULE.FUNCTION [env: OCILAMBDA_HANDLER].
    #[arg(long)]
    handler: Option<String>,
    /// x86_64 or arm64 (amd64/aarch64 accepted) [default: x86_64] [env: OCILAMBDA_ARCH].
    #[arg(long, value_parser = parse_arch)]
    arch: Option<Arch>,
    /// Extra app files (globs relative to the app root); repeatable [env: OCILAMBDA_INCLUDE].
    #[arg(long)]
    include: Vec<String>,
    /// App files to leave out (globs); repeatable [env: OCILAMBDA_EXCLUDE].
    #[arg(long)]
    exclude: Vec<String>,
    /// Compile hash-based bytecode with an interpreter of the target version [default for
    /// images] [env: OCILAMBDA_COMPILE_BYTECODE].
    #[arg(long, conflicts_with = "no_compile_bytecode")]
    compile_bytecode: bool,
    /// Ship sources only [default for zips].
    #[arg(long)]
    no_compile_bytecode: bool,
}

/// `Some(true)` for the flag, `Some(false)` for its `--no-` form, None for neither.
fn either(yes: bool, no: bool) -> Option<bool> {
    (yes || no).then_some(yes)
}

/// A repeatable flag as a setting: not given is not set (a lower source may set it).
fn list(v: &[String]) -> Option<Vec<String>> {
    (!v.is_empty()).then(|| v.to_vec())
}

impl FunctionArgs {
    fn settings(&self) -> Settings {
        Settings {
            python_version: self.python_version,
            handler: self.handler.clone(),
            arch: self.arch,
            include: list(&self.include),
            exclude: list(&self.exclude),
            compile_bytecode: either(self.compile_bytecode, self.no_compile_bytecode),
            ..Default::default()
        }
    }
}

/// Which of the project's Lambdas, with which optional dependencies (`build`, `zip`,
/// `verify`).
#[derive(Args)]
struct SelectArgs {
    /// The Lambda of this workspace member [default: the workspace root's]
    /// [env: OCILAMBDA_PACKAGE].
    #[arg(long)]
    package: Option<String>,
    /// Include an optional dependency group of the project; repeatable
    /// [env: OCILAMBDA_EXTRA].
    #[arg(long)]
    extra: Vec<String>,
    /// Include every optional dependency group of the project [env: OCILAMBDA_ALL_EXTRAS].
    #[arg(long)]
    all_extras: bool,
    /// Include a dependency group (`dev` included); repeatable [env: OCILAMBDA_GROUP].
    #[arg(long)]
    group: Vec<String>,
}

impl SelectArgs {
    /// `base` with the selection flags given set on it.
    fn over(&self, base: Settings) -> Settings {
        Settings {
            package: self.package.clone(),
            extras: list(&self.extra),
            all_extras: self.all_extras.then_some(true),
            groups: list(&self.group),
            ..base
        }
    }
}

#[derive(Args)]
#[command(after_help = PRECEDENCE)]
struct BuildArgs {
    /// The uv project (workspace root) [default: current directory].
    project_dir: Option<PathBuf>,
    #[command(flatten)]
    project: ProjectArg,
    #[command(flatten)]
    settings: SettingArgs,
    /// Also write a CycloneDX SBOM of the installed distributions, as an OCI referrer
    /// [env: OCILAMBDA_SBOM].
    #[arg(long, conflicts_with = "no_sbom")]
    sbom: bool,
    /// No SBOM, whatever the environment or pyproject.toml say.
    #[arg(long)]
    no_sbom: bool,
    /// OCI image layout to write [default: <PROJECT_DIR>/.ocilambda/image].
    #[arg(long)]
    output: Option<PathBuf>,
    #[command(flatten)]
    select: SelectArgs,
    /// Also copy every base-layer blob into the layout (self-contained).
    #[arg(long)]
    complete: bool,
    #[command(flatten)]
    network: NetworkArgs,
    #[command(flatten)]
    registry: RegistryArgs,
    /// Print a JSON summary on stdout instead of the digest.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    quiet: QuietArg,
}

#[derive(Args)]
#[command(after_help = PRECEDENCE)]
struct ZipArgs {
    /// The uv project (workspace root) [default: current directory].
    project_dir: Option<PathBuf>,
    #[command(flatten)]
    project: ProjectArg,
    #[command(flatten)]
    function: FunctionArgs,
    /// The zip to write [default: <PROJECT_DIR>/.ocilambda/package.zip]; with --layer, the
    /// directory for both zips [default: <PROJECT_DIR>/.ocilambda/].
    #[arg(long)]
    output: Option<PathBuf>,
    /// Write layer_content.zip (dependencies, for a Lambda layer) and app.zip (app code).
    #[arg(long)]
    layer: bool,
    #[command(flatten)]
    select: SelectArgs,
    /// Never touch the network (packages must be in uv's cache).
    #[arg(long)]
    offline: bool,
    /// Print a JSON summary on stdout instead of the zip paths.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    quiet: QuietArg,
}

#[derive(Args)]
#[command(after_help = PRECEDENCE)]
struct PushArgs {
    /// REGISTRY/REPOSITORY[:TAG] [default: the `repository` setting
    /// (env: OCILAMBDA_REPOSITORY); tag: latest].
    reference: Option<String>,
    /// The project whose configuration and layout to use [default: current directory].
    #[arg(long, value_name = "DIR")]
    project: Option<PathBuf>,
    /// The OCI image layout to push [default: <PROJECT>/.ocilambda/image].
    #[arg(long)]
    layout: Option<PathBuf>,
    /// Another tag to push, besides REF's own; repeatable.
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Blobs uploaded in parallel.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    jobs: u16,
    /// Push even when lint's error-level checks fail (they run before any upload).
    #[arg(long)]
    no_lint: bool,
    #[command(flatten)]
    create: CreateRepositoryArgs,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    aws: AwsArgs,
    /// Print a JSON summary on stdout instead of the reference.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    quiet: QuietArg,
}

#[derive(Args)]
#[command(after_help = PRECEDENCE)]
struct DeployArgs {
    /// The uv project (workspace root) [default: current directory].
    project_dir: Option<PathBuf>,
    #[command(flatten)]
    project: ProjectArg,
    /// The Lambda function: a name or an ARN [env: OCILAMBDA_FUNCTION].
    #[arg(long)]
    function: Option<String>,
    /// Image functions: REGISTRY/REPOSITORY[:TAG] to push to [env: OCILAMBDA_REPOSITORY].
    #[arg(long, value_name = "REF")]
    repository: Option<String>,
    /// Zip functions: put the dependencies in this Lambda layer (a new version only when
    /// they changed) [env: OCILAMBDA_LAYER].
    #[arg(long, value_name = "NAME")]
    layer: Option<String>,
    /// Zip functions: send zips above Lambda's 50 MB request limit through this S3
    /// bucket (in the function's region) [env: OCILAMBDA_S3_BUCKET].
    #[arg(long, value_name = "BUCKET")]
    s3_bucket: Option<String>,
    /// The size above which zips go through S3 (tests lower it).
    #[arg(long, hide = true, value_name = "BYTES")]
    direct_upload_limit: Option<u64>,
    #[command(flatten)]
    settings: SettingArgs,
    #[command(flatten)]
    select: SelectArgs,
    /// Publish a version of the function after the update.
    #[arg(long)]
    publish: bool,
    /// Point this alias at the published version (implies --publish).
    #[arg(long, value_name = "NAME")]
    alias: Option<String>,
    /// Return once Lambda accepted the update, without waiting for it to finish
    /// (a version can only be published once it has).
    #[arg(long, conflicts_with_all = ["publish", "alias"])]
    no_wait: bool,
    /// Allow an image registry that is not an ECR registry of the function's region
    /// (a mirror Lambda can pull from; tests) [env: OCILAMBDA_ALLOW_NON_ECR].
    #[arg(long)]
    allow_non_ecr: bool,
    #[command(flatten)]
    create: CreateRepositoryArgs,
    /// Blobs uploaded in parallel.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    jobs: u16,
    #[command(flatten)]
    network: NetworkArgs,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    aws: AwsArgs,
    /// Print a JSON summary on stdout instead of the image reference or CodeSha256.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    quiet: QuietArg,
}

#[derive(Args)]
struct LoginArgs {
    /// The registry host, e.g. 123456789012.dkr.ecr.us-east-1.amazonaws.com.
    registry: String,
    /// The user name (`AWS` for ECR, with `aws ecr get-login-password` as the password).
    #[arg(long, short)]
    username: String,
    /// Read the password from stdin (the only way: it never appears in the process list).
    #[arg(long, required = true)]
    password_stdin: bool,
    #[command(flatten)]
    registry_args: RegistryArgs,
    #[command(flatten)]
    quiet: QuietArg,
}

#[derive(Args)]
struct LogoutArgs {
    /// The registry host.
    registry: String,
    #[command(flatten)]
    quiet: QuietArg,
}

#[derive(Args)]
struct InvokeArgs {
    /// An OCI image layout or REGISTRY/REPOSITORY[:TAG] [default: <PROJECT>/.ocilambda/image].
    image: Option<String>,
    /// The event JSON: a file, or - for stdin [default: {}].
    #[arg(long, value_name = "FILE|-", conflicts_with = "serve")]
    event: Option<PathBuf>,
    /// The client context for the function: a JSON object, passed to the runtime as
    /// Lambda does (the Lambda-Runtime-Client-Context header; context.client_context).
    #[arg(long, value_name = "FILE", conflicts_with = "serve")]
    client_context: Option<PathBuf>,
    /// Instead: keep the function warm and serve the Runtime Interface Emulator's
    /// endpoint, POST /2015-03-31/functions/function/invocations [default: 127.0.0.1:9000].
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:9000")]
    serve: Option<String>,
    /// The project whose build output is the default IMAGE [default: current directory].
    #[arg(long, value_name = "DIR")]
    project: Option<PathBuf>,
    /// A variable for the function: KEY=VALUE, or KEY to pass your own value; repeatable.
    #[arg(long = "env", value_name = "KEY[=VALUE]")]
    env: Vec<String>,
    /// The function timeout in seconds, as Lambda's.
    #[arg(long, value_name = "SECONDS", default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=900))]
    timeout: u64,
    /// Memory in MB: sets AWS_LAMBDA_FUNCTION_MEMORY_SIZE, and is enforced where a memory
    /// cgroup can be made (cgroup v2 with memory delegated, or a writable v1 hierarchy) [default: 128].
    #[arg(long, value_name = "MB", value_parser = clap::value_parser!(u32).range(128..=10240))]
    memory: Option<u32>,
    /// The function's network: private (its own, with outbound access through pasta or
    /// slirp4netns, never the host's loopback), host (the host's, loopback included), or
    /// none (only the Runtime API).
    #[arg(long, value_enum, value_name = "MODE", default_value_t = ocilambda::invoke::network::Network::Private)]
    network: ocilambda::invoke::network::Network,
    /// Bytes of unpacked image layers to keep cached for later invocations, least
    /// recently used dropped first, e.g. 2GiB, 500MiB [default: 2GiB] [env: OCILAMBDA_INVOKE_CACHE_SIZE].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    invoke_cache_size: Option<u64>,
    #[command(flatten)]
    registry: RegistryArgs,
    /// No progress output (the function's own logs still go to stderr).
    #[arg(long, short)]
    quiet: bool,
}

/// Exit 0 for a response, 1 for a function error (its error JSON is the output).
async fn invoke(args: InvokeArgs, env: &Environment) -> anyhow::Result<ExitCode> {
    use ocilambda::invoke;
    use std::io::Write;
    let reporter = Terminal::new(args.quiet);
    let project_dir = args.project.unwrap_or_else(|| PathBuf::from("."));
    // pyproject < environment < command line, as for every setting.
    let settings = config::read_pyproject(&project_dir)?
        .overlaid_with(env.settings()?)
        .overlaid_with(Settings {
            invoke_cache_size: args.invoke_cache_size,
            ..Settings::default()
        });
    let opts = invoke::InvokeOptions {
        image: args.image,
        project_dir,
        cache_size: settings
            .invoke_cache_size
            .unwrap_or(invoke::rootfs::DEFAULT_CACHE_SIZE),
        env: args.env,
        timeout: std::time::Duration::from_secs(args.timeout),
        memory_mb: args.memory.unwrap_or(128),
        memory_explicit: args.memory.is_some(),
        ca_cert: args.registry.ca_cert(env),
        insecure_registries: args.registry.insecure_registry,
        network: args.network,
        cache_dir: env.cache_dir()?,
    };
    if let Some(addr) = args.serve {
        invoke::serve(opts, &addr, reporter, |bound| {
            println!("http://{bound}/2015-03-31/functions/function/invocations");
            let _ = std::io::stdout().flush();
        })
        .await?;
        return Ok(ExitCode::SUCCESS);
    }
    let request = invoke::Request {
        event: invoke::read_event(args.event.as_deref())?,
        client_context: args
            .client_context
            .as_deref()
            .map(invoke::read_client_context)
            .transpose()?,
        trace_id: None,
    };
    let outcome = invoke::invoke(opts, request, reporter).await?;
    let mut out = std::io::stdout().lock();
    out.write_all(outcome.payload())?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(match outcome {
        invoke::Outcome::Response(_) => ExitCode::SUCCESS,
        invoke::Outcome::FunctionError(_) => ExitCode::from(1),
    })
}

/// Print a command's summary: JSON, or its plain result lines.
fn print_summary<T: serde::Serialize>(
    json: bool,
    summary: &T,
    plain: String,
) -> anyhow::Result<()> {
    if json {
        emit(&format!("{}\n", serde_json::to_string(summary)?));
    } else {
        emit(&plain);
    }
    Ok(())
}

async fn audit(command: Command, env: &Environment) -> anyhow::Result<ExitCode> {
    use ocilambda::audit::{self, verify};
    use ocilambda::commands::audit as render;
    let cache_dir = env.cache_dir()?;
    let rendered = match command {
        Command::Inspect(a) => {
            let ca = a.audit.registry.ca_cert(env);
            let reporter = Terminal::new(a.audit.quiet.quiet);
            let i =
                audit::inspect_image(&a.image, a.files, a.audit.access(&ca, &cache_dir), reporter)
                    .await?;
            render::inspection(&i, a.audit.json)?
        }
        Command::Diff(a) => {
            let ca = a.audit.registry.ca_cert(env);
            let reporter = Terminal::new(a.audit.quiet.quiet);
            let access = a.audit.access(&ca, &cache_dir);
            let c = audit::diff_images(&a.image_a, &a.image_b, access, reporter).await?;
            render::comparison(&c, a.audit.json)?
        }
        Command::Lint(a) => {
            let ca = a.audit.registry.ca_cert(env);
            let reporter = Terminal::new(a.audit.quiet.quiet);
            let r = audit::lint_image(&a.image, a.audit.access(&ca, &cache_dir), reporter).await?;
            render::lint(&r, a.audit.json)?
        }
        Command::Verify(a) => {
            let reporter = Terminal::new(a.audit.quiet.quiet);
            let request = verify::VerifyRequest {
                image: a.image,
                project_dir: project_dir(a.project_dir, a.project),
                cli: a.select.over(a.settings.settings()),
                env: env.settings()?,
                cache_dir: env.cache_dir()?,
                ca_cert: a.audit.registry.ca_cert(env),
                insecure_registries: a.audit.registry.insecure_registry,
                offline: a.network.offline,
                pull: a.network.pull,
            };
            render::verdict(&verify::verify(request, reporter).await?, a.audit.json)?
        }
        _ => unreachable!("not an audit command"),
    };
    Ok(report(rendered))
}

async fn build_command(args: BuildArgs, env: &Environment) -> anyhow::Result<ExitCode> {
    let reporter = Terminal::new(args.quiet.quiet);
    let request = build::BuildRequest {
        project_dir: project_dir(args.project_dir, args.project),
        cli: Settings {
            sbom: either(args.sbom, args.no_sbom),
            ..args.select.over(args.settings.settings())
        },
        env: env.settings()?,
        cache_dir: env.cache_dir()?,
        output: args.output,
        complete: args.complete,
        pull: args.network.pull,
        offline: args.network.offline,
        ca_cert: args.registry.ca_cert(env),
        insecure_registries: args.registry.insecure_registry,
        epoch: env.source_date_epoch()?,
        base_digest: None,
    };
    let summary = build::build(request, reporter).await?;
    print_summary(args.json, &summary, format!("{}\n", summary.digest))?;
    Ok(ExitCode::SUCCESS)
}

fn zip_command(args: ZipArgs, env: &Environment) -> anyhow::Result<ExitCode> {
    let reporter = Terminal::new(args.quiet.quiet);
    let request = package::ZipRequest {
        project_dir: project_dir(args.project_dir, args.project),
        cli: args.select.over(args.function.settings()),
        env: env.settings()?,
        cache_dir: env.cache_dir()?,
        output: args.output,
        layer: args.layer,
        offline: args.offline,
    };
    let summary = package::zip(request, reporter)?;
    let paths: String = summary
        .zips
        .iter()
        .map(|z| format!("{}\n", z.path.display()))
        .collect();
    print_summary(args.json, &summary, paths)?;
    Ok(ExitCode::SUCCESS)
}

async fn push_command(args: PushArgs, env: &Environment) -> anyhow::Result<ExitCode> {
    let reporter = Terminal::with_bars(args.quiet.quiet);
    let request = push::PushRequest {
        project_dir: args.project.unwrap_or_else(|| PathBuf::from(".")),
        reference: args.reference,
        layout: args.layout,
        tags: args.tags,
        jobs: usize::from(args.jobs),
        ca_cert: args.registry.ca_cert(env),
        insecure_registries: args.registry.insecure_registry,
        env: env.settings()?,
        cache_dir: env.cache_dir()?,
        create_repository: args.create.setting(),
        immutable_tags: args.create.immutable_tags,
        aws: args.aws.options(),
        aws_loaded: None,
    };
    if !args.no_lint {
        // Bad references fail before the image is read; then what Lambda would refuse
        // fails before any byte is uploaded.
        push::destination(&request)?;
        let access = ocilambda::audit::Access {
            insecure: &request.insecure_registries,
            ca_cert: request.ca_cert.as_deref(),
            cache_dir: &request.cache_dir,
        };
        let layout = push::layout(&request);
        ocilambda::audit::lint_before_push(&layout, access, reporter.clone()).await?;
    }
    let pushed = push::push(request, reporter.clone()).await;
    // Bars still drawn (after an error) go before the error is printed.
    reporter.clear();
    let summary = pushed?;
    print_summary(args.json, &summary, format!("{}\n", summary.reference))?;
    Ok(ExitCode::SUCCESS)
}

async fn deploy_command(args: DeployArgs, env: &Environment) -> anyhow::Result<ExitCode> {
    let reporter = Terminal::with_bars(args.quiet.quiet);
    let request = deploy::DeployRequest {
        project_dir: project_dir(args.project_dir, args.project),
        cli: Settings {
            function: args.function,
            repository: args.repository,
            layer: args.layer,
            s3_bucket: args.s3_bucket,
            allow_non_ecr: args.allow_non_ecr.then_some(true),
            create_repository: args.create.setting(),
            ..args.select.over(args.settings.settings())
        },
        env: env.settings()?,
        cache_dir: env.cache_dir()?,
        aws: args.aws.options(),
        no_wait: args.no_wait,
        publish: args.publish,
        alias: args.alias,
        immutable_tags: args.create.immutable_tags,
        offline: args.network.offline,
        pull: args.network.pull,
        ca_cert: args.registry.ca_cert(env),
        insecure_registries: args.registry.insecure_registry,
        jobs: usize::from(args.jobs),
        epoch: env.source_date_epoch()?,
        direct_upload_limit: args.direct_upload_limit,
    };
    let deployed = deploy::deploy(request, reporter.clone()).await;
    reporter.clear();
    let summary = deployed?;
    let line = summary
        .image_uri
        .clone()
        .or(summary.code_sha256.clone())
        .unwrap_or_default();
    print_summary(args.json, &summary, format!("{line}\n"))?;
    Ok(ExitCode::SUCCESS)
}

async fn run(cli: Cli, env: &Environment) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Invoke(args) => invoke(args, env).await,
        c @ (Command::Inspect(_) | Command::Diff(_) | Command::Lint(_) | Command::Verify(_)) => {
            audit(c, env).await
        }
        Command::Push(args) => push_command(args, env).await,
        Command::Deploy(args) => deploy_command(args, env).await,
        Command::Login(args) => {
            let reporter = Terminal::new(args.quiet.quiet);
            let request = login::LoginRequest {
                registry: args.registry,
                username: args.username,
                ca_cert: args.registry_args.ca_cert(env),
                insecure_registries: args.registry_args.insecure_registry,
            };
            login::login(request, std::io::stdin().lock(), &*reporter).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Logout(args) => {
            login::logout(&args.registry, &*Terminal::new(args.quiet.quiet)).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Zip(args) => zip_command(args, env),
        Command::Build(args) => build_command(args, env).await,
        c @ (Command::Completions(_) | Command::Manpage(_)) => docs_command(c),
    }
}

/// A usage error from clap (exit 2), with our hint when a value's type names one.
fn usage_error(e: &clap::Error) -> ExitCode {
    use std::error::Error;
    let _ = e.print();
    if !e.use_stderr() {
        // --help and --version
        return ExitCode::SUCCESS;
    }
    if let Some(h) = e.source().and_then(ocilambda::diagnostics::value_hint) {
        terminal::hint(&h);
    }
    ExitCode::from(2)
}

/// Write a result to stdout. A reader that went away (`ocilambda inspect --files | head`)
/// is not an error of ours: Rust ignores SIGPIPE, and `print!` would panic on EPIPE.
fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

fn main() -> ExitCode {
    // clap's usage errors are exit 2 like every other error; --help/--version are 0.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    // The one read of the process environment; the library takes these values as inputs.
    let env = Environment::from_vars(std::env::vars_os());
    for (var, suggestion) in env.unknown_vars() {
        terminal::warning(&format!("unknown variable {var} ignored; {suggestion}"));
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            terminal::error(&format!("starting the async runtime: {e}"));
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli, &env)) {
        Ok(code) => code,
        Err(err) => {
            terminal::error(&error::one_line(&err));
            terminal::hint(&ocilambda::diagnostics::hint_or_fallback(&err));
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// The README's synopsis of `name`: the lines of its fenced blocks from `ocilambda
    /// NAME` up to the next command or the end of the block.
    fn synopsis(readme: &str, name: &str) -> String {
        let mut out = String::new();
        let (mut in_block, mut taking) = (false, false);
        for line in readme.lines() {
            if line.starts_with("```") {
                in_block = !in_block;
                taking = false;
                continue;
            }
            if in_block && line.starts_with("ocilambda ") {
                taking = line.starts_with(&format!("ocilambda {name} "))
                    || line == format!("ocilambda {name}");
            }
            if in_block && taking {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    #[test]
    fn readme_synopses_list_every_flag() {
        let readme = include_str!("../README.md");
        let cli = Cli::command();
        for sub in cli.get_subcommands() {
            let name = sub.get_name();
            let mut text = synopsis(readme, name);
            assert!(!text.is_empty(), "README has no synopsis of `{name}`");
            if name == "verify" || name == "deploy" {
                // verify and deploy take build's settings flags, listed once under build.
                text.push_str(&synopsis(readme, "build"));
            }
            for arg in sub.get_arguments() {
                let Some(long) = arg.get_long() else { continue };
                if long == "help" || arg.is_hide_set() {
                    continue;
                }
                let flag = format!("--{long}");
                let listed = text
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                    .any(|w| w == flag);
                assert!(
                    listed,
                    "the README's synopsis of `{name}` lacks {flag}:\n{text}"
                );
            }
        }
    }

    #[test]
    fn bad_values_fail_in_the_parser_before_any_project_is_read() {
        for args in [
            &["ocilambda", "build", "/nonexistent", "--arch", "sparc"][..],
            &["ocilambda", "zip", "--python-version", "3.9"],
            &["ocilambda", "verify", "img", "--base-ttl", "soon"],
            &[
                "ocilambda",
                "zip",
                "--compile-bytecode",
                "--no-compile-bytecode",
            ],
            &["ocilambda", "build", "--sbom", "--no-sbom"],
            &["ocilambda", "build", "dir", "--project", "other"],
            &["ocilambda", "deploy", "--no-wait", "--publish"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
        let Err(err) = Cli::try_parse_from(["ocilambda", "build", "--arch", "sparc"]) else {
            panic!("sparc is no architecture")
        };
        let source = std::error::Error::source(&err).unwrap();
        assert!(
            ocilambda::diagnostics::value_hint(source)
                .unwrap()
                .contains("arm64")
        );
    }

    #[test]
    fn flags_become_settings_and_unset_flags_do_not() {
        let Cli {
            command: Command::Build(b),
        } = Cli::try_parse_from([
            "ocilambda",
            "build",
            "--arch",
            "aarch64",
            "--group",
            "dev",
            "--no-sbom",
            "--no-compile-bytecode",
        ])
        .unwrap()
        else {
            panic!("a build")
        };
        let s = b.select.over(b.settings.settings());
        assert_eq!(s.arch, Some(Arch::Arm64));
        assert_eq!(s.groups, Some(vec!["dev".to_string()]));
        assert_eq!(s.compile_bytecode, Some(false));
        assert_eq!((s.extras, s.all_extras, s.package), (None, None, None));
        assert_eq!(either(b.sbom, b.no_sbom), Some(false));
        assert_eq!(either(false, false), None);
    }
}

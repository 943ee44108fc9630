//! The `ocilambda` command line: parses arguments, calls the library, prints the result,
//! and maps errors to exit codes (0 success, 1 negative verdict, 2 error). Nothing else.

use clap::{Args, Parser, Subcommand};
use ocilambda::{build, config::Settings, error, login, output, package, push};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "ocilambda",
    version,
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
    /// Store registry credentials in the Docker config, as `docker login` does.
    Login(LoginArgs),
    /// Remove stored registry credentials.
    Logout(LogoutArgs),
    /// Show an image: platform, handler, base, layers (IMAGE: layout dir, oci:DIR or registry ref).
    Inspect(InspectArgs),
    /// Compare two images down to single files; exit 0 identical, 1 different.
    Diff(DiffArgs),
    /// Check an image against what Lambda accepts; exit 0 clean, 1 findings.
    Lint(LintArgs),
    /// Run the built image locally in a sandbox, as Lambda would; prints the response.
    Invoke(InvokeArgs),
    /// Rebuild the project as the image records and compare; exit 0 reproducible, 1 not.
    Verify(VerifyArgs),
}

#[derive(Args)]
struct VerifyArgs {
    image: String,
    /// The uv project to rebuild [default: current directory].
    project_dir: Option<PathBuf>,
    #[command(flatten)]
    settings: SettingArgs,
    #[command(flatten)]
    select: SelectArgs,
    #[command(flatten)]
    audit: AuditArgs,
}

#[derive(Args)]
struct AuditArgs {
    /// Allow plain HTTP for this registry host; repeatable.
    #[arg(long)]
    insecure_registry: Vec<String>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
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
fn report(r: ocilambda::audit::Report) -> ExitCode {
    emit(&r.stdout);
    if r.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The settings of an image build (`build`, `verify`).
#[derive(Args)]
struct SettingArgs {
    /// Base image [default: public.ecr.aws/lambda/python:<python-version>].
    #[arg(long)]
    base: Option<String>,
    #[command(flatten)]
    function: FunctionArgs,
    /// How long a cached base tag resolution is trusted [default: 24h].
    #[arg(long)]
    base_ttl: Option<String>,
}

impl SettingArgs {
    fn settings(&self) -> Settings {
        Settings {
            base: self.base.clone(),
            base_ttl: self.base_ttl.clone(),
            ..self.function.settings()
        }
    }
}

/// The settings images and zips share: the function's runtime, handler and files.
#[derive(Args)]
struct FunctionArgs {
    /// Target Python version (3.10-3.14).
    #[arg(long)]
    python_version: Option<String>,
    /// The Lambda handler, MODULE.FUNCTION.
    #[arg(long)]
    handler: Option<String>,
    /// x86_64 or arm64 (amd64/aarch64 accepted) [default: x86_64].
    #[arg(long)]
    arch: Option<String>,
    /// Extra app files (globs relative to the app root); repeatable.
    #[arg(long)]
    include: Vec<String>,
    /// App files to leave out (globs); repeatable.
    #[arg(long)]
    exclude: Vec<String>,
    /// Compile hash-based bytecode with an interpreter of the target version [default for
    /// images].
    #[arg(long, overrides_with = "no_compile_bytecode")]
    compile_bytecode: bool,
    /// Ship sources only [default for zips].
    #[arg(long, overrides_with = "compile_bytecode")]
    no_compile_bytecode: bool,
}

impl FunctionArgs {
    fn settings(&self) -> Settings {
        let non_empty = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        Settings {
            python_version: self.python_version.clone(),
            handler: self.handler.clone(),
            arch: self.arch.clone(),
            include: non_empty(&self.include),
            exclude: non_empty(&self.exclude),
            compile_bytecode: if self.compile_bytecode {
                Some(true)
            } else if self.no_compile_bytecode {
                Some(false)
            } else {
                None
            },
            ..Default::default()
        }
    }
}

/// Which of the project's Lambdas, with which optional dependencies (`build`, `zip`,
/// `verify`).
#[derive(Args)]
struct SelectArgs {
    /// The Lambda of this workspace member [default: the workspace root's].
    #[arg(long)]
    package: Option<String>,
    /// Include an optional dependency group of the project; repeatable.
    #[arg(long)]
    extra: Vec<String>,
    /// Include every optional dependency group of the project.
    #[arg(long)]
    all_extras: bool,
    /// Include a dependency group; repeatable.
    #[arg(long)]
    group: Vec<String>,
}

#[derive(Args)]
struct BuildArgs {
    /// The uv project (workspace root) [default: current directory].
    project_dir: Option<PathBuf>,
    #[command(flatten)]
    settings: SettingArgs,
    /// Also write a CycloneDX SBOM of the installed distributions, as an OCI referrer.
    #[arg(long)]
    sbom: bool,
    /// OCI image layout to write [default: <PROJECT_DIR>/.ocilambda/image].
    #[arg(long)]
    output: Option<PathBuf>,
    #[command(flatten)]
    select: SelectArgs,
    /// Also copy every base-layer blob into the layout (self-contained).
    #[arg(long)]
    complete: bool,
    /// Resolve the base tag again even if a recent resolution is cached.
    #[arg(long, conflicts_with = "offline")]
    pull: bool,
    /// Never touch the network (base and packages must be cached).
    #[arg(long)]
    offline: bool,
    /// Allow plain HTTP for this registry host; repeatable.
    #[arg(long)]
    insecure_registry: Vec<String>,
    /// Print a JSON summary on stdout instead of the digest.
    #[arg(long)]
    json: bool,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Args)]
struct ZipArgs {
    /// The uv project (workspace root) [default: current directory].
    project_dir: Option<PathBuf>,
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
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Args)]
struct PushArgs {
    /// REGISTRY/REPOSITORY[:TAG] [default: the `repository` setting; tag: latest].
    reference: Option<String>,
    /// The project whose configuration and layout to use [default: current directory].
    #[arg(long)]
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
    /// Allow plain HTTP for this registry host; repeatable.
    #[arg(long)]
    insecure_registry: Vec<String>,
    /// An extra CA certificate (PEM) to trust [also: SSL_CERT_FILE].
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    /// Print a JSON summary on stdout instead of the reference.
    #[arg(long)]
    json: bool,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
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
    /// Allow plain HTTP for this registry host; repeatable.
    #[arg(long)]
    insecure_registry: Vec<String>,
    /// An extra CA certificate (PEM) to trust [also: SSL_CERT_FILE].
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Args)]
struct LogoutArgs {
    /// The registry host.
    registry: String,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Args)]
struct InvokeArgs {
    /// An OCI image layout or REGISTRY/REPOSITORY[:TAG] [default: <PROJECT>/.ocilambda/image].
    image: Option<String>,
    /// The event JSON: a file, or - for stdin [default: {}].
    #[arg(long, value_name = "FILE|-", conflicts_with = "serve")]
    event: Option<PathBuf>,
    /// Instead: keep the function warm and serve the Runtime Interface Emulator's
    /// endpoint, POST /2015-03-31/functions/function/invocations [default: 127.0.0.1:9000].
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:9000")]
    serve: Option<String>,
    /// The project whose build output is the default IMAGE [default: current directory].
    #[arg(long)]
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
    /// Allow plain HTTP for this registry host; repeatable.
    #[arg(long)]
    insecure_registry: Vec<String>,
    /// No progress output (the function's own logs still go to stderr).
    #[arg(long, short)]
    quiet: bool,
}

/// Exit 0 for a response, 1 for a function error (its error JSON is the output).
async fn invoke(args: InvokeArgs) -> anyhow::Result<ExitCode> {
    use ocilambda::invoke;
    use std::io::Write;
    output::set_quiet(args.quiet);
    let opts = invoke::InvokeOptions {
        image: args.image,
        project_dir: args.project.unwrap_or_else(|| PathBuf::from(".")),
        env: args.env,
        timeout: std::time::Duration::from_secs(args.timeout),
        memory_mb: args.memory.unwrap_or(128),
        memory_explicit: args.memory.is_some(),
        insecure_registries: args.insecure_registry,
    };
    if let Some(addr) = args.serve {
        invoke::serve(opts, &addr, |bound| {
            println!("http://{bound}/2015-03-31/functions/function/invocations");
            let _ = std::io::stdout().flush();
        })
        .await?;
        return Ok(ExitCode::SUCCESS);
    }
    let event = invoke::read_event(args.event.as_deref())?;
    let outcome = invoke::invoke(opts, event).await?;
    let mut out = std::io::stdout().lock();
    out.write_all(outcome.payload())?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(match outcome {
        invoke::Outcome::Response(_) => ExitCode::SUCCESS,
        invoke::Outcome::FunctionError(_) => ExitCode::from(1),
    })
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Invoke(args) => invoke(args).await,
        Command::Inspect(a) => Ok(report(
            ocilambda::audit::inspect_command(
                &a.image,
                a.files,
                a.audit.json,
                &a.audit.insecure_registry,
            )
            .await?,
        )),
        Command::Diff(a) => Ok(report(
            ocilambda::audit::diff_command(
                &a.image_a,
                &a.image_b,
                a.audit.json,
                &a.audit.insecure_registry,
            )
            .await?,
        )),
        Command::Verify(a) => Ok(report(
            ocilambda::audit::verify::verify_command(ocilambda::audit::verify::VerifyRequest {
                image: a.image,
                project_dir: a.project_dir.unwrap_or_else(|| PathBuf::from(".")),
                cli: a.settings.settings(),
                package: a.select.package,
                extras: a.select.extra,
                all_extras: a.select.all_extras,
                groups: a.select.group,
                insecure_registries: a.audit.insecure_registry,
                json: a.audit.json,
            })
            .await?,
        )),
        Command::Lint(a) => Ok(report(
            ocilambda::audit::lint_command(&a.image, a.audit.json, &a.audit.insecure_registry)
                .await?,
        )),
        Command::Push(args) => {
            output::set_quiet(args.quiet);
            let request = push::PushRequest {
                project_dir: args.project.unwrap_or_else(|| PathBuf::from(".")),
                reference: args.reference,
                layout: args.layout,
                tags: args.tags,
                jobs: usize::from(args.jobs),
                insecure_registries: args.insecure_registry,
                ca_cert: args.ca_cert,
            };
            let summary = push::push(request).await?;
            if args.json {
                emit(&format!("{}\n", serde_json::to_string(&summary)?));
            } else {
                emit(&format!("{}\n", summary.reference));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Login(args) => {
            output::set_quiet(args.quiet);
            let request = login::LoginRequest {
                registry: args.registry,
                username: args.username,
                insecure_registries: args.insecure_registry,
                ca_cert: args.ca_cert,
            };
            login::login(request, std::io::stdin().lock()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Logout(args) => {
            output::set_quiet(args.quiet);
            login::logout(&args.registry).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Zip(args) => {
            output::set_quiet(args.quiet);
            let request = package::ZipRequest {
                project_dir: args.project_dir.unwrap_or_else(|| PathBuf::from(".")),
                cli: args.function.settings(),
                output: args.output,
                layer: args.layer,
                package: args.select.package,
                extras: args.select.extra,
                all_extras: args.select.all_extras,
                groups: args.select.group,
                offline: args.offline,
            };
            let summary = package::zip(request)?;
            if args.json {
                emit(&format!("{}\n", serde_json::to_string(&summary)?));
            } else {
                for z in &summary.zips {
                    emit(&format!("{}\n", z.path.display()));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Build(args) => {
            output::set_quiet(args.quiet);
            let request = build::BuildRequest {
                project_dir: args.project_dir.unwrap_or_else(|| PathBuf::from(".")),
                cli: Settings {
                    sbom: args.sbom.then_some(true),
                    ..args.settings.settings()
                },
                output: args.output,
                package: args.select.package,
                extras: args.select.extra,
                all_extras: args.select.all_extras,
                groups: args.select.group,
                complete: args.complete,
                pull: args.pull,
                offline: args.offline,
                insecure_registries: args.insecure_registry,
                epoch: None,
                base_digest: None,
            };
            let summary = build::build(request).await?;
            if args.json {
                emit(&format!("{}\n", serde_json::to_string(&summary)?));
            } else {
                emit(&format!("{}\n", summary.digest));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Write a result to stdout. A reader that went away (`ocilambda inspect --files | head`)
/// is not an error of ours: Rust ignores SIGPIPE, and `print!` would panic on EPIPE.
fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // clap's usage errors are exit 2 like every other error; --help/--version are 0.
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            output::error(&format!("starting the async runtime: {e}"));
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => {
            output::error(&error::one_line(&err));
            if let Some(h) = ocilambda::diagnostics::hint(&err) {
                output::hint(&h);
            }
            ExitCode::from(2)
        }
    }
}

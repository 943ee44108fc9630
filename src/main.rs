//! The `ocilambda` command line: parses arguments, calls the library, prints the result,
//! and maps errors to exit codes (0 success, 1 negative verdict, 2 error). Nothing else.

use clap::{Args, Parser, Subcommand};
use ocilambda::{build, config::Settings, error, output};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "ocilambda",
    version,
    about = "Build AWS Lambda Python images from a uv project, without Docker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build an OCI image layout for Lambda from a uv project.
    Build(BuildArgs),
}

#[derive(Args)]
struct SettingArgs {
    /// Base image [default: public.ecr.aws/lambda/python:<python-version>].
    #[arg(long)]
    base: Option<String>,
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
    /// Compile hash-based bytecode with an interpreter of the target version [default].
    #[arg(long, overrides_with = "no_compile_bytecode")]
    compile_bytecode: bool,
    #[arg(long, overrides_with = "compile_bytecode")]
    no_compile_bytecode: bool,
    /// How long a cached base tag resolution is trusted [default: 24h].
    #[arg(long)]
    base_ttl: Option<String>,
}

impl SettingArgs {
    fn settings(&self) -> Settings {
        let non_empty = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        Settings {
            base: self.base.clone(),
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
            base_ttl: self.base_ttl.clone(),
            ..Default::default()
        }
    }
}

#[derive(Args)]
struct BuildArgs {
    /// The uv project (workspace root) [default: current directory].
    project_dir: Option<PathBuf>,
    #[command(flatten)]
    settings: SettingArgs,
    /// OCI image layout to write [default: <PROJECT_DIR>/.ocilambda/image].
    #[arg(long)]
    output: Option<PathBuf>,
    /// Build the Lambda of this workspace member.
    #[arg(long)]
    package: Option<String>,
    /// Include an optional dependency group of the project; repeatable.
    #[arg(long)]
    extra: Vec<String>,
    #[arg(long)]
    all_extras: bool,
    /// Include a dependency group; repeatable.
    #[arg(long)]
    group: Vec<String>,
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

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Build(args) => {
            output::set_quiet(args.quiet);
            let request = build::BuildRequest {
                project_dir: args.project_dir.unwrap_or_else(|| PathBuf::from(".")),
                cli: args.settings.settings(),
                output: args.output,
                package: args.package,
                extras: args.extra,
                all_extras: args.all_extras,
                groups: args.group,
                complete: args.complete,
                pull: args.pull,
                offline: args.offline,
                insecure_registries: args.insecure_registry,
            };
            let summary = build::build(request).await?;
            if args.json {
                println!("{}", serde_json::to_string(&summary)?);
            } else {
                println!("{}", summary.digest);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
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
            if let Some(h) = error::find_hint(&err) {
                output::hint(h);
            }
            ExitCode::from(2)
        }
    }
}

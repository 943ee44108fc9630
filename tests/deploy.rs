//! End-to-end tests of ECR credentials from the AWS credential chain and of `ocilambda
//! deploy`, against moto's server (Lambda, ECR, IAM, STS; reached through
//! AWS_ENDPOINT_URL with fake keys) and Debian's docker-registry standing in for ECR: over
//! TLS with htpasswd, whose user is `AWS` and whose password is the token moto's ECR
//! GetAuthorizationToken hands out, named `ecr-login` in the Docker config's credHelpers
//! (no docker-credential-ecr-login on PATH: ocilambda serves it in process).
//!
//! Arrange and check with the AWS SDK for Rust; act through the CLI. Every command's
//! output is checked for the fake keys and the token.
mod common;

use aws_config::BehaviorVersion;
use aws_sdk_lambda::types::{Architecture, FunctionCode, PackageType, Runtime};
use common::proxy::{Fault, FaultProxy, Rule};
use common::tls::Tls;
use common::*;
use serde_json::Value;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Output;

/// What moto's GetAuthorizationToken decodes to: `AWS:<this>` (its default account).
const MOTO_TOKEN: &str = "123456789012-auth-token";
/// `AWS:` + bcrypt of [`MOTO_TOKEN`] (made once with Python's bcrypt, cost 10; a fixed
/// line keeps apache2-utils and bcrypt out of the test dependencies).
const HTPASSWD: &str = "AWS:$2b$10$a5cYD5aq8pSttPnt/j0NMOWiF7IWpArZtbaiYjKerqgMokZ4pmT9W\n";

/// Secrets that must never reach stdout or stderr.
fn assert_no_secret(out: &Output) {
    use base64::Engine;
    let token_b64 = base64::engine::general_purpose::STANDARD.encode(format!("AWS:{MOTO_TOKEN}"));
    let text = format!("{}{}", stdout_raw(out), stderr(out));
    for secret in [AWS_TEST_SECRET, AWS_TEST_KEY_ID, MOTO_TOKEN, &token_b64] {
        assert!(!text.contains(secret), "a secret in the output:\n{text}");
    }
}

/// A CI job's world: moto, a HOME without ~/.aws, a Docker config, a cache, and the
/// test's own copy of the FastAPI example.
struct World {
    moto: Moto,
    /// The cache directory (shared by the tests unless one needs its own).
    cache: PathBuf,
    dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    sdk: aws_config::SdkConfig,
}

impl World {
    fn new() -> World {
        let moto = Moto::start();
        let dir = tempfile::Builder::new()
            .prefix("ocilambda-deploy-")
            .tempdir()
            .unwrap();
        for sub in ["home", "docker"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        copy_project("fastapi-app", &dir.path().join("project"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let sdk = rt.block_on(
            aws_config::defaults(BehaviorVersion::latest())
                .http_client(http)
                .region(aws_config::Region::new(AWS_TEST_REGION))
                .endpoint_url(moto.url())
                .credentials_provider(aws_credential_types::Credentials::new(
                    AWS_TEST_KEY_ID,
                    AWS_TEST_SECRET,
                    None,
                    None,
                    "tests",
                ))
                .load(),
        );
        World {
            moto,
            cache: scratch_dir().join("cache"),
            dir,
            rt,
            sdk,
        }
    }

    fn project(&self) -> PathBuf {
        self.dir.path().join("project")
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn lambda(&self) -> aws_sdk_lambda::Client {
        aws_sdk_lambda::Client::new(&self.sdk)
    }

    fn docker_config(&self, config: &Value) {
        std::fs::write(
            self.dir.path().join("docker/config.json"),
            serde_json::to_vec(config).unwrap(),
        )
        .unwrap();
    }

    /// `ocilambda ARGS` in the job's environment (moto's, unless `env` replaces it).
    fn run_with(&self, args: &[&str], env: Option<Vec<(&str, String)>>) -> Output {
        let mut cmd = ocilambda(&self.cache);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("AWS_") {
                cmd.env_remove(&key);
            }
        }
        cmd.env("DOCKER_CONFIG", self.dir.path().join("docker"))
            .env_remove("SSL_CERT_FILE")
            .envs(env.unwrap_or_else(|| self.moto.env(&self.home())))
            .args(args);
        let out = run(cmd);
        assert_no_secret(&out);
        out
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_with(args, None)
    }

    /// `ocilambda deploy <project> ARGS`.
    fn deploy(&self, args: &[&str]) -> Output {
        let project = self.project();
        let mut all = vec!["deploy", project.to_str().unwrap()];
        all.extend_from_slice(args);
        self.run(&all)
    }

    fn create_image_function(&self, name: &str, image: &str, arch: Architecture) {
        let role = self.moto.create_role(&format!("{name}-role"));
        self.rt
            .block_on(
                self.lambda()
                    .create_function()
                    .function_name(name)
                    .package_type(PackageType::Image)
                    .code(FunctionCode::builder().image_uri(image).build())
                    .role(role)
                    .architectures(arch)
                    .send(),
            )
            .unwrap();
    }

    fn create_zip_function(&self, name: &str) {
        let role = self.moto.create_role(&format!("{name}-role"));
        let zip = self.dir.path().join("placeholder.zip");
        let script = "import sys, zipfile\nwith zipfile.ZipFile(sys.argv[1], 'w') as z:\n    z.writestr('placeholder.py', 'def handler(e, c):\\n    return 0\\n')\n";
        let mut cmd = std::process::Command::new(host_python());
        cmd.args(["-c", script]).arg(&zip);
        run_checked(cmd);
        self.rt
            .block_on(
                self.lambda()
                    .create_function()
                    .function_name(name)
                    .runtime(Runtime::Python311)
                    .handler("app.main.handler")
                    .code(
                        FunctionCode::builder()
                            .zip_file(aws_sdk_lambda::primitives::Blob::new(
                                std::fs::read(&zip).unwrap(),
                            ))
                            .build(),
                    )
                    .role(role)
                    .send(),
            )
            .unwrap();
    }

    fn function(&self, name: &str) -> aws_sdk_lambda::operation::get_function::GetFunctionOutput {
        self.rt
            .block_on(self.lambda().get_function().function_name(name).send())
            .unwrap()
    }
}

/// A TLS + htpasswd registry standing in for ECR: user `AWS`, password moto's token.
fn ecr_registry() -> (Registry, Tls) {
    let tls = Tls::new();
    let htpasswd = tls.dir.path().join("htpasswd");
    std::fs::write(&htpasswd, HTPASSWD).unwrap();
    let mut env = tls.env();
    env.push(("REGISTRY_AUTH", "htpasswd".into()));
    env.push(("REGISTRY_AUTH_HTPASSWD_REALM", "ecr-stand-in".into()));
    env.push((
        "REGISTRY_AUTH_HTPASSWD_PATH",
        htpasswd.display().to_string(),
    ));
    (Registry::start_with_env(&env), tls)
}

fn json(out: &Output) -> Value {
    serde_json::from_str(&assert_ok(out)).unwrap()
}

/// The tags a registry's storage holds for `repo`.
fn tags(registry: &Registry, repo: &str) -> Vec<String> {
    let dir = registry
        .storage()
        .join("docker/registry/v2/repositories")
        .join(repo)
        .join("_manifests/tags");
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn base64_sha256(path: &Path) -> String {
    use base64::Engine;
    use sha2::Digest;
    base64::engine::general_purpose::STANDARD
        .encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

#[test]
fn push_to_an_ecr_login_registry_needs_no_login() {
    let world = World::new();
    let (registry, tls) = ecr_registry();
    let project = world.project();
    let base = stand_in_base("3.11");
    let built = world.run(&["build", project.to_str().unwrap(), "--base", &base]);
    assert_ok(&built);
    let target = format!("{}/fn:v1", registry.addr);
    let ca = tls.ca();
    let push = |world: &World| {
        world.run(&[
            "push",
            &target,
            "--project",
            project.to_str().unwrap(),
            "--ca-cert",
            ca.to_str().unwrap(),
        ])
    };
    // Without the ecr-login entry nothing authenticates: the registry refuses.
    world.docker_config(&serde_json::json!({}));
    assert_user_error(&push(&world), "not authorised");
    assert!(tags(&registry, "fn").is_empty());
    world.docker_config(&serde_json::json!({"credHelpers": {&registry.addr: "ecr-login"}}));
    let out = push(&world);
    let reference = assert_ok(&out);
    assert!(reference.starts_with(&format!("{}/fn@sha256:", registry.addr)));
    assert_eq!(tags(&registry, "fn"), ["v1"]);
    // moto's tokens expired in 2015: none is kept for the next command.
    assert!(
        !scratch_dir().join("cache/ecr-tokens").exists() || {
            std::fs::read_dir(scratch_dir().join("cache/ecr-tokens"))
                .unwrap()
                .next()
                .is_none()
        }
    );
}

#[test]
fn deploy_points_an_image_function_at_the_pushed_digest_once() {
    let world = World::new();
    let (registry, tls) = ecr_registry();
    world.docker_config(&serde_json::json!({"credHelpers": {&registry.addr: "ecr-login"}}));
    let placeholder = format!("{}/fn@sha256:{}", registry.addr, "0".repeat(64));
    world.create_image_function("img", &placeholder, Architecture::X8664);
    let repository = format!("{}/fn", registry.addr);
    let base = stand_in_base("3.11");
    let ca = tls.ca();
    let args = [
        "--function",
        "img",
        "--repository",
        &repository,
        "--allow-non-ecr",
        "--base",
        &base,
        "--ca-cert",
        ca.to_str().unwrap(),
        "--alias",
        "live",
        "--json",
    ];
    let first = json(&world.deploy(&args));
    assert_eq!(first["changed"], true, "{first}");
    assert_eq!(first["package_type"], "Image");
    let image = first["image_uri"].as_str().unwrap().to_string();
    let layout_digest =
        std::fs::read_to_string(world.project().join(".ocilambda/image/index.json"))
            .map(|t| serde_json::from_str::<Value>(&t).unwrap()["manifests"][0]["digest"].clone())
            .unwrap();
    assert_eq!(
        image,
        format!("{repository}@{}", layout_digest.as_str().unwrap())
    );
    let function = world.function("img");
    assert_eq!(function.code().unwrap().image_uri(), Some(image.as_str()));
    assert_eq!(first["version"], "1");

    let second = json(&world.deploy(&args));
    assert_eq!(second["changed"], false, "{second}");
    assert_eq!(second["image_uri"], image.as_str());
    // The version holding this code already exists: reported, not published again
    // (Lambda publishes none for unchanged code), and the alias stays on it.
    assert_eq!(second["version"], "1", "{second}");
    // No code update: no second version, the alias where the first deploy put it.
    let versions = world
        .rt
        .block_on(
            world
                .lambda()
                .list_versions_by_function()
                .function_name("img")
                .send(),
        )
        .unwrap();
    let versions: Vec<_> = versions
        .versions()
        .iter()
        .filter_map(|v| v.version())
        .collect();
    assert_eq!(versions, ["$LATEST", "1"]);
    let alias = world
        .rt
        .block_on(
            world
                .lambda()
                .get_alias()
                .function_name("img")
                .name("live")
                .send(),
        )
        .unwrap();
    assert_eq!(alias.function_version(), Some("1"));
    // stdout without --json: the deployed reference alone.
    let plain = world.deploy(&args[..args.len() - 1]);
    assert_eq!(assert_ok(&plain), image);
    assert!(stderr(&plain).contains("unchanged"), "{}", stderr(&plain));
}

#[test]
fn an_architecture_mismatch_is_refused_before_anything_is_built() {
    let world = World::new();
    let registry = shared_registry();
    let placeholder = format!("{}/arm-fn@sha256:{}", registry.addr, "0".repeat(64));
    world.create_image_function("arm", &placeholder, Architecture::Arm64);
    let repository = format!("{}/arm-fn", registry.addr);
    let base = stand_in_base("3.11");
    let out = world.deploy(&[
        "--function",
        "arm",
        "--repository",
        &repository,
        "--allow-non-ecr",
        "--base",
        &base,
        "--arch",
        "x86_64",
    ]);
    let err = assert_user_error(&out, "runs on arm64");
    assert!(err.contains("--arch arm64"), "{err}");
    assert!(!world.project().join(".ocilambda").exists());
    let function = world.function("arm");
    assert_eq!(
        function.code().unwrap().image_uri(),
        Some(placeholder.as_str())
    );
}

#[test]
fn an_image_function_needs_an_ecr_registry_of_its_region() {
    let world = World::new();
    let registry = shared_registry();
    let placeholder = format!("{}/x@sha256:{}", registry.addr, "0".repeat(64));
    world.create_image_function("needs-ecr", &placeholder, Architecture::X8664);
    let repository = format!("{}/x", registry.addr);
    let out = world.deploy(&["--function", "needs-ecr", "--repository", &repository]);
    let err = assert_user_error(&out, "not an Amazon ECR registry in us-east-1");
    assert!(err.contains("--allow-non-ecr"), "{err}");
    assert!(!world.project().join(".ocilambda").exists());
}

#[test]
fn deploy_updates_a_zip_function_and_its_layer_only_when_they_change() {
    let world = World::new();
    world.create_zip_function("zf");
    let first = json(&world.deploy(&["--function", "zf", "--json"]));
    assert_eq!(first["changed"], true, "{first}");
    assert_eq!(first["package_type"], "Zip");
    let zip = world.project().join(".ocilambda/package.zip");
    assert_eq!(first["code_sha256"], base64_sha256(&zip));
    let function = world.function("zf");
    let config = function.configuration().unwrap();
    assert_eq!(config.code_sha256(), Some(base64_sha256(&zip).as_str()));
    let again = json(&world.deploy(&["--function", "zf", "--json"]));
    assert_eq!(again["changed"], false);

    // With a layer: the dependencies move to one layer version, used by the function.
    let with_layer = ["--function", "zf", "--layer", "zf-deps", "--json"];
    let layered = json(&world.deploy(&with_layer));
    assert_eq!(layered["changed"], true, "{layered}");
    let layer_arn = layered["layer_version_arn"].as_str().unwrap().to_string();
    let app = world.project().join(".ocilambda/app.zip");
    assert_eq!(layered["code_sha256"], base64_sha256(&app));
    let unchanged = json(&world.deploy(&with_layer));
    assert_eq!(unchanged["changed"], false, "{unchanged}");
    assert_eq!(unchanged["layer_version_arn"], layer_arn.as_str());
    let listed = world
        .rt
        .block_on(
            world
                .lambda()
                .list_layer_versions()
                .layer_name("zf-deps")
                .send(),
        )
        .unwrap();
    assert_eq!(listed.layer_versions().len(), 1);
    let layer = world
        .rt
        .block_on(
            world
                .lambda()
                .get_layer_version()
                .layer_name("zf-deps")
                .version_number(1)
                .send(),
        )
        .unwrap();
    assert_eq!(
        layer.content().unwrap().code_sha256(),
        Some(base64_sha256(&world.project().join(".ocilambda/layer_content.zip")).as_str())
    );
    let function = world.function("zf");
    let config = function.configuration().unwrap();
    let layers: Vec<_> = config.layers().iter().filter_map(|l| l.arn()).collect();
    assert_eq!(layers, [layer_arn.as_str()]);
    assert_eq!(config.code_sha256(), Some(base64_sha256(&app).as_str()));
}

#[test]
fn a_missing_function_is_named_with_the_command_that_creates_it() {
    let world = World::new();
    let out = world.deploy(&["--function", "nowhere"]);
    let err = assert_user_error(&out, "function nowhere does not exist in us-east-1");
    assert!(err.contains("aws lambda create-function"), "{err}");
}

#[test]
fn no_credentials_names_the_sources_tried() {
    let world = World::new();
    let env = vec![
        ("AWS_REGION", AWS_TEST_REGION.to_string()),
        ("AWS_ENDPOINT_URL", world.moto.url()),
        ("HOME", world.home().display().to_string()),
        // Not on EC2: the metadata endpoint would only time out.
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
    ];
    let out = world.run_with(
        &[
            "deploy",
            world.project().to_str().unwrap(),
            "--function",
            "f",
        ],
        Some(env),
    );
    let err = assert_user_error(&out, "no AWS credentials");
    for source in [
        "AWS_ACCESS_KEY_ID",
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ] {
        assert!(err.contains(source), "{err}");
    }
}

#[test]
fn web_identity_credentials_come_through_sts() {
    let world = World::new();
    world.create_zip_function("oidc");
    let role = world.moto.create_role("github-actions");
    let token = world.dir.path().join("oidc-token");
    std::fs::write(&token, "eyJhbGciOiJSUzI1NiJ9.github-oidc.stand-in").unwrap();
    let env = vec![
        ("AWS_REGION", AWS_TEST_REGION.to_string()),
        ("AWS_ENDPOINT_URL", world.moto.url()),
        ("HOME", world.home().display().to_string()),
        ("AWS_WEB_IDENTITY_TOKEN_FILE", token.display().to_string()),
        ("AWS_ROLE_ARN", role),
        ("AWS_ROLE_SESSION_NAME", "ci".to_string()),
    ];
    let out = world.run_with(
        &[
            "deploy",
            world.project().to_str().unwrap(),
            "--function",
            "oidc",
            "--json",
        ],
        Some(env),
    );
    let summary = json(&out);
    assert_eq!(summary["changed"], true);
    let function = world.function("oidc");
    assert_eq!(
        function.configuration().unwrap().code_sha256(),
        summary["code_sha256"].as_str()
    );
}

#[test]
fn create_repository_answers_name_unknown() {
    let world = World::new();
    let registry = Registry::start();
    let proxy = FaultProxy::start(&registry.addr);
    world.docker_config(&serde_json::json!({"credHelpers": {&proxy.addr: "ecr-login"}}));
    let project = world.project();
    let base = stand_in_base("3.11");
    assert_ok(&world.run(&["build", project.to_str().unwrap(), "--base", &base]));
    let target = format!("{}/team/made:v1", proxy.addr);
    let unknown = || {
        proxy.add(Rule::new(
            "POST",
            "/blobs/uploads/",
            Fault::status(404, "NAME_UNKNOWN"),
            1,
        ))
    };
    unknown();
    let refused = world.run(&["push", &target, "--project", project.to_str().unwrap()]);
    assert_user_error(&refused, "does not exist");
    unknown();
    let out = world.run(&[
        "push",
        &target,
        "--project",
        project.to_str().unwrap(),
        "--create-repository",
    ]);
    assert_ok(&out);
    assert!(
        stderr(&out).contains("Created repository"),
        "{}",
        stderr(&out)
    );
    let ecr = aws_sdk_ecr::Client::new(&world.sdk);
    let repos = world
        .rt
        .block_on(ecr.describe_repositories().send())
        .unwrap();
    let made = repos
        .repositories()
        .iter()
        .find(|r| r.repository_name() == Some("team/made"))
        .expect("team/made created in ECR");
    assert_eq!(
        made.image_scanning_configuration()
            .map(|c| c.scan_on_push()),
        Some(true)
    );
    assert_eq!(tags(&registry, "team/made"), ["v1"]);
}

#[test]
fn zips_above_the_request_limit_go_through_s3() {
    let world = World::new();
    world.create_zip_function("big");
    let s3 = aws_sdk_s3::Client::new(&world.sdk);
    world
        .rt
        .block_on(s3.create_bucket().bucket("deploy-bucket").send())
        .unwrap();
    // The limit lowered so that the example's zip (a few MiB) is "too large".
    let limit = ["--function", "big", "--direct-upload-limit", "100000"];
    let refused = world.deploy(&limit);
    let err = assert_user_error(&refused, "above the");
    assert!(err.contains("--s3-bucket"), "{err}");
    let mut args = limit.to_vec();
    args.extend(["--s3-bucket", "deploy-bucket", "--json"]);
    let summary = json(&world.deploy(&args));
    assert_eq!(summary["changed"], true);
    let zip = world.project().join(".ocilambda/package.zip");
    let function = world.function("big");
    assert_eq!(
        function.configuration().unwrap().code_sha256(),
        Some(base64_sha256(&zip).as_str())
    );
    let listed = world
        .rt
        .block_on(s3.list_objects_v2().bucket("deploy-bucket").send())
        .unwrap();
    let keys: Vec<_> = listed.contents().iter().filter_map(|o| o.key()).collect();
    use sha2::Digest;
    let hex = hex::encode(sha2::Sha256::digest(std::fs::read(&zip).unwrap()));
    assert_eq!(keys, [format!("ocilambda/{hex}.zip")]);
}

/// The job-level `env:` of a workflow and the `run:` of its step named `step` (a plain
/// line scan: the example is ours and keeps to one-line values).
fn workflow_parts(text: &str, step: &str) -> (Vec<(String, String)>, String) {
    let mut env = Vec::new();
    let mut in_env = false;
    let mut run = None;
    let mut in_step = false;
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim();
        if trimmed.starts_with('#') || trimmed.is_empty() {
            continue;
        }
        if indent == 4 {
            in_env = trimmed == "env:";
            continue;
        }
        if in_env && indent == 6 {
            let (k, v) = trimmed.split_once(": ").unwrap();
            env.push((k.to_string(), v.to_string()));
        }
        if let Some(name) = trimmed.strip_prefix("- name: ") {
            in_step = name == step;
        }
        if in_step && let Some(cmd) = trimmed.strip_prefix("run: ") {
            run = Some(cmd.to_string());
        }
    }
    (
        env,
        run.unwrap_or_else(|| panic!("no step {step:?} with a run: line")),
    )
}

#[test]
fn the_example_github_workflow_deploys_with_build_and_deploy_alone() {
    let text = std::fs::read_to_string(repo_root().join("examples/ci/deploy.yml")).unwrap();
    // The path it shows is OIDC credentials and ocilambda alone.
    assert!(text.contains("id-token: write"));
    assert!(text.contains("aws-actions/configure-aws-credentials"));
    for line in text.lines().filter(|l| l.trim_start().starts_with("run:")) {
        assert!(
            !line.contains("aws ") && !line.contains("docker"),
            "the workflow should need neither the AWS CLI nor Docker: {line}"
        );
    }
    let (job_env, run) = workflow_parts(&text, "Build and deploy");
    let value = |key: &str| {
        job_env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("the job sets no {key}"))
    };
    assert_eq!(value("AWS_REGION"), AWS_TEST_REGION);
    let function = value("OCILAMBDA_FUNCTION");
    let role_name = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("role-to-assume: "))
        .and_then(|arn| arn.rsplit('/').next())
        .unwrap()
        .to_string();

    let world = World::new();
    let (registry, tls) = ecr_registry();
    world.docker_config(&serde_json::json!({"credHelpers": {&registry.addr: "ecr-login"}}));
    // The workflow's repository, on the stand-in for its ECR registry.
    let repository_name = value("OCILAMBDA_REPOSITORY")
        .split_once('/')
        .unwrap()
        .1
        .to_string();
    let repository = format!("{}/{repository_name}", registry.addr);
    world.create_image_function(
        &function,
        &format!("{repository}@sha256:{}", "0".repeat(64)),
        Architecture::X8664,
    );
    // What configure-aws-credentials' OIDC path amounts to: a web identity token for the
    // role, exchanged at STS (moto's) by the credential chain.
    let role = world.moto.create_role(&role_name);
    let token = world.dir.path().join("oidc-token");
    std::fs::write(&token, "eyJhbGciOiJSUzI1NiJ9.github-oidc.stand-in").unwrap();
    let bin = world.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_ocilambda"), bin.join("ocilambda")).unwrap();

    let mut cmd = std::process::Command::new("bash");
    cmd.args(["-eo", "pipefail", "-c", &run])
        .current_dir(world.project());
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("AWS_") || key.starts_with("OCILAMBDA_") {
            cmd.env_remove(&*key);
        }
    }
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    cmd.envs(job_env.iter().cloned())
        .env("PATH", path)
        .env("HOME", world.home())
        .env("DOCKER_CONFIG", world.dir.path().join("docker"))
        .env("OCILAMBDA_CACHE_DIR", scratch_dir().join("cache"))
        .env("NO_COLOR", "1")
        .env("AWS_WEB_IDENTITY_TOKEN_FILE", &token)
        .env("AWS_ROLE_ARN", &role)
        .env("AWS_ENDPOINT_URL", world.moto.url())
        // The local stand-ins: the registry for ECR, the base for Lambda's.
        .env("OCILAMBDA_REPOSITORY", &repository)
        .env("OCILAMBDA_ALLOW_NON_ECR", "true")
        .env("OCILAMBDA_BASE", stand_in_base("3.11"))
        .env("SSL_CERT_FILE", tls.ca())
        .stdin(std::process::Stdio::null());
    let out = cmd.output().unwrap();
    assert_no_secret(&out);
    let printed = assert_ok(&out);
    let deployed = printed.lines().last().unwrap();
    assert!(
        deployed.starts_with(&format!("{repository}@sha256:")),
        "{printed}"
    );
    let got = world.function(&function);
    assert_eq!(got.code().unwrap().image_uri(), Some(deployed));
}

/// Where ocilambda keeps the ECR token of `registry` for the identity of the test keys
/// (`<cache>/ecr-tokens/`, named by a hash of the registry and of the access key ID).
fn token_file(cache: &Path, registry: &str) -> PathBuf {
    use sha2::Digest;
    let identity = hex::encode(&sha2::Sha256::digest(AWS_TEST_KEY_ID.as_bytes())[..8]);
    let name = sha2::Sha256::digest(format!("{registry}\n{identity}").as_bytes());
    cache
        .join("ecr-tokens")
        .join(format!("{}.json", hex::encode(&name[..16])))
}

fn write_token(file: &Path, registry: &str, password: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let expires_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let cached = serde_json::json!({
        "registry": registry, "username": "AWS", "password": password, "expires_at": expires_at,
    });
    std::fs::write(file, cached.to_string()).unwrap();
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn a_cached_token_is_used_without_asking_ecr_and_a_refused_one_is_renewed_once() {
    let mut world = World::new();
    let project = world.project();
    let base = stand_in_base("3.11");
    assert_ok(&world.run(&["build", project.to_str().unwrap(), "--base", &base]));
    world.cache = world.dir.path().join("cache");
    let (registry, tls) = ecr_registry();
    world.docker_config(&serde_json::json!({"credHelpers": {&registry.addr: "ecr-login"}}));
    let ca = tls.ca();
    let push = |world: &World, tag: &str, env: Option<Vec<(&str, String)>>| {
        let target = format!("{}/cached:{tag}", registry.addr);
        world.run_with(
            &[
                "push",
                &target,
                "--project",
                project.to_str().unwrap(),
                "--ca-cert",
                ca.to_str().unwrap(),
            ],
            env,
        )
    };
    let file = token_file(&world.cache, &registry.addr);
    // A valid token in the cache, and no ECR to ask: the push works from the cache.
    write_token(&file, &registry.addr, MOTO_TOKEN);
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut offline = world.moto.env(&world.home());
    offline.retain(|(k, _)| *k != "AWS_ENDPOINT_URL");
    offline.push(("AWS_ENDPOINT_URL", format!("http://{dead}")));
    assert_ok(&push(&world, "from-cache", Some(offline.clone())));
    assert_eq!(tags(&registry, "cached"), ["from-cache"]);
    // A revoked token in the cache: the registry's 401 earns one fresh token from ECR.
    write_token(&file, &registry.addr, "revoked-token");
    assert_ok(&push(&world, "renewed", None));
    let mut got = tags(&registry, "cached");
    got.sort();
    assert_eq!(got, ["from-cache", "renewed"]);
    // Requests in parallel on a revoked token (one HEAD per tag): one renews it, the
    // others retry with the new token instead of failing.
    write_token(&file, &registry.addr, "revoked-token");
    let target = format!("{}/cached:p1", registry.addr);
    let out = world.run_with(
        &[
            "push",
            &target,
            "--tag",
            "p2",
            "--tag",
            "p3",
            "--tag",
            "p4",
            "--project",
            project.to_str().unwrap(),
            "--ca-cert",
            ca.to_str().unwrap(),
        ],
        None,
    );
    assert_ok(&out);
    let mut got = tags(&registry, "cached");
    got.sort();
    assert_eq!(got, ["from-cache", "p1", "p2", "p3", "p4", "renewed"]);
    // Without ECR, the revoked token cannot be renewed: the push fails, naming why.
    write_token(&file, &registry.addr, "revoked-token");
    let out = push(&world, "never", Some(offline));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot reach AWS"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn settings_of_the_other_package_type_are_refused_before_anything_is_built() {
    let world = World::new();
    world.create_zip_function("zip-only");
    let repository = format!("{}/zip-only", shared_registry().addr);
    let out = world.deploy(&["--function", "zip-only", "--repository", &repository]);
    let err = assert_user_error(&out, "packaged as Zip, which takes no `repository`");
    assert!(err.contains("--repository"), "{err}");
    assert!(!world.project().join(".ocilambda").exists());
    // The function still runs the placeholder it was created with.
    let placeholder = base64_sha256(&world.dir.path().join("placeholder.zip"));
    let function = world.function("zip-only");
    assert_eq!(
        function.configuration().unwrap().code_sha256(),
        Some(placeholder.as_str())
    );
}

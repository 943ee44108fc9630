"""Run the shell steps of a GitHub Actions workflow here, so the documented CI recipe is
executed by the test suite and cannot rot.

    python3 scripts/run-workflow.py WORKFLOW.yml JOB WORKDIR [STEP_ID=VAR=VALUE ...]

Each `run:` step of JOB runs in order under bash (`set -eo pipefail`, as GitHub's default
shell), in WORKDIR, with the workflow's and the job's `env:`, then the step's own, then this
process's environment on top (the caller's values win: that is how a test points the recipe
at a local registry). `uses:` steps are GitHub's actions (checkout, setup-uv, credentials):
they are listed and skipped, and the caller provides what they would (the checkout is
WORKDIR, uv is on PATH). `STEP_ID=VAR=VALUE` sets VAR for the step with that `id:` only,
e.g. to make the install step take a wheel just built instead of PyPI's. `${{ env.X }}`
expressions are expanded; any other `${{ }}` expression is an error, as the step could
not run as written.

Exits with the first failing step's status. Needs PyYAML (`uv run --with pyyaml`).
"""

import os
import re
import subprocess
import sys
import tempfile

import yaml

EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


def expand(text, env):
    def one(m):
        expr = m.group(1)
        if expr.startswith("env."):
            return env.get(expr[4:], "")
        sys.exit(f"run-workflow: cannot evaluate ${{{{ {expr} }}}} outside GitHub")

    return EXPR.sub(one, str(text))


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    path, job_name, workdir, *overrides = sys.argv[1:]
    per_step = {}
    for o in overrides:
        step_id, var, value = o.split("=", 2)
        per_step.setdefault(step_id, {})[var] = value
    with open(path) as f:
        workflow = yaml.safe_load(f)
    job = workflow["jobs"][job_name]
    base = {k: str(v) for k, v in (workflow.get("env") or {}).items()}
    base.update({k: str(v) for k, v in (job.get("env") or {}).items()})
    # The files GitHub gives every step; a step that appends to them must not fail here.
    with tempfile.TemporaryDirectory(prefix="run-workflow-") as files:
        for var in ("GITHUB_OUTPUT", "GITHUB_ENV", "GITHUB_PATH", "GITHUB_STEP_SUMMARY"):
            base.setdefault(var, os.path.join(files, var.lower()))
        run_steps(job, base, workdir, per_step)


def run_steps(job, base, workdir, per_step):
    ran = 0
    for step in job["steps"]:
        label = step.get("name") or step.get("id") or step.get("uses") or step.get("run")
        if "uses" in step:
            print(f"run-workflow: skip {step['uses']} (GitHub's action)", file=sys.stderr)
            continue
        env = dict(base)
        env.update({k: expand(v, env) for k, v in (step.get("env") or {}).items()})
        env.update(os.environ)
        env.update(per_step.pop(step.get("id"), {}))
        script = expand(step["run"], env)
        cwd = os.path.join(workdir, step.get("working-directory", "."))
        print(f"run-workflow: step {label!r}", file=sys.stderr, flush=True)
        status = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
            cwd=cwd,
            env=env,
        ).returncode
        if status != 0:
            print(f"run-workflow: step {label!r} failed with status {status}", file=sys.stderr)
            sys.exit(status)
        ran += 1
    if per_step:
        sys.exit(f"run-workflow: no step with id {', '.join(per_step)}")
    if ran == 0:
        sys.exit("run-workflow: the job has no run steps")


if __name__ == "__main__":
    main()

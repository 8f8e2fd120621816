//! The CI files shipped in the repository (`.github/workflows/release-suite.yml`,
//! `.gitlab-ci.yml`, `ci/k8s/release-suite-job.yaml`) load as YAML, agree
//! with themselves (as many machines as the N of `--shard K/N`), and every
//! `devlab` command in them works: each shard's `suite` command is run with
//! `--list` (which also reads `ci/durations.json`) and their union is the
//! whole suite; `report merge` is run on two empty shard reports. The
//! Kubernetes Job is read into a strict subset of the batch/v1 schema
//! (unknown fields refused) and checked the way the API server would
//! (names, restart policy, quantities, mounts), since `kubectl apply
//! --dry-run=client` needs a cluster to reach. Nothing boots.

use serde::Deserialize;
use serde_yaml::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn load(rel: &str) -> Value {
    let path = root().join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{rel} is not YAML: {e}"))
}

/// Every string in a YAML document, depth first.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Sequence(items) => items.iter().for_each(|i| strings(i, out)),
        Value::Mapping(m) => m.values().for_each(|i| strings(i, out)),
        Value::Tagged(t) => strings(&t.value, out),
        _ => {}
    }
}

/// The `devlab` commands in a CI file: each shell segment (lines, `&&`,
/// `;`) that starts with `devlab` (or a path ending in `/devlab`), or is
/// `cargo run … -p harness -- …`, as written (variables unexpanded).
fn devlab_commands(doc: &Value) -> Vec<String> {
    let mut all = Vec::new();
    strings(doc, &mut all);
    let mut out = Vec::new();
    for s in &all {
        for segment in s.lines().flat_map(|l| l.split("&&")).flat_map(|l| l.split(';')) {
            let segment = segment.trim();
            let first = segment.split_whitespace().next().unwrap_or("");
            // A bare `devlab` is a name (a container's, an artifact's), not a command.
            if (first == "devlab" || first.ends_with("/devlab")) && segment.len() > first.len() {
                out.push(segment[first.len()..].trim().to_string());
            } else if first == "cargo" && segment.contains(" -p harness -- ") {
                out.push(segment.split_once(" -p harness -- ").unwrap().1.trim().to_string());
            }
        }
    }
    out
}

/// The N of a command's `--shard K/N`.
fn shard_n(cmd: &str, vars: &[(&str, String)]) -> usize {
    let arg = expand(cmd, vars);
    let shard = arg
        .split_whitespace()
        .skip_while(|a| *a != "--shard")
        .nth(1)
        .unwrap_or_else(|| panic!("no --shard in `{cmd}`"));
    shard.split_once('/').and_then(|(_, n)| n.parse().ok()).unwrap_or_else(|| panic!("`{shard}` is not K/N in `{cmd}`"))
}

fn expand(cmd: &str, vars: &[(&str, String)]) -> String {
    vars.iter().fold(cmd.to_string(), |c, (k, v)| c.replace(k, v))
}

fn devlab(args: &[String]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_devlab")).args(args).current_dir(root()).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Run `cmd` for shard k of n (the file's variables given for k): a
/// `suite`/`run` with `--list` and its report folder in a temp dir (its run
/// ids returned), a `report merge` on two empty shard reports.
fn try_command(cmd: &str, vars: &[(&str, String)]) -> Vec<String> {
    let tmp = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = expand(cmd, vars).split_whitespace().map(str::to_string).collect();
    for w in 1..args.len() {
        if args[w - 1] == "--report-dir" || args[w - 1] == "--out" {
            args[w] = tmp.path().join("out").display().to_string();
        }
    }
    match args.first().map(String::as_str) {
        Some("suite") | Some("run") => {
            args.push("--list".into());
            let (ok, stdout, stderr) = devlab(&args);
            assert!(ok, "devlab {} failed: {stderr}", args.join(" "));
            if args.iter().any(|a| a == "--durations") {
                assert!(stderr.contains(" predicted: wall_s="), "no prediction from `{}`: {stderr}", args.join(" "));
            }
            stdout.lines().map(|l| l.split('\t').next().unwrap().to_string()).collect()
        }
        Some("report") => {
            assert_eq!(args.get(1).map(String::as_str), Some("merge"), "{cmd}");
            let mut shards = Vec::new();
            for k in 1..=2 {
                let dir = tmp.path().join(format!("shard-{k}"));
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join("summary.json"), r#"{"duration_s": 0.0, "runs": []}"#).unwrap();
                shards.push(dir.display().to_string());
            }
            // The shard folders the file names by a pattern are these two.
            let at =
                args.iter().position(|a| a.contains('*')).unwrap_or_else(|| panic!("no report folders in `{cmd}`"));
            args.splice(at..=at, shards);
            let (ok, stdout, stderr) = devlab(&args);
            assert!(
                ok && stdout.contains("merged 0 runs from 2 reports"),
                "devlab {}: {stdout}{stderr}",
                args.join(" ")
            );
            Vec::new()
        }
        _ => panic!("`devlab {cmd}`: not a devlab command this test knows"),
    }
}

/// Every `devlab` command of a CI file works for each shard k of n, and the
/// shards' runs together are the whole suite, once each.
fn check_commands(file: &str, cmds: &[String], n: usize, vars: impl Fn(usize) -> Vec<(&'static str, String)>) {
    let suite: Vec<&String> = cmds.iter().filter(|c| c.starts_with("suite ")).collect();
    assert_eq!(suite.len(), 1, "{file}: one suite command: {cmds:?}");
    assert!(suite[0].contains("--durations ci/durations.json"), "{file}: {}", suite[0]);
    let mut union = Vec::new();
    for k in 1..=n {
        for c in cmds {
            union.extend(try_command(c, &vars(k)));
        }
    }
    let name = suite[0].split_whitespace().nth(1).unwrap().to_string();
    let (ok, whole, err) = devlab(&["suite".into(), name, "--list".into()]);
    assert!(ok, "{err}");
    let mut whole: Vec<&str> = whole.lines().collect();
    whole.sort();
    union.sort();
    assert_eq!(union, whole, "{file}: the shards' runs are not the whole suite, once each");
}

#[test]
fn github_workflow_matrix_matches_its_shards() {
    let file = ".github/workflows/release-suite.yml";
    let doc = load(file);
    let jobs = doc["jobs"].as_mapping().unwrap_or_else(|| panic!("{file}: no jobs"));
    let suite = &doc["jobs"]["release-suite"];
    let matrix: Vec<u64> = suite["strategy"]["matrix"]["shard"]
        .as_sequence()
        .unwrap_or_else(|| panic!("{file}: no strategy.matrix.shard"))
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(doc["jobs"]["merge"]["needs"], "release-suite", "{file}");
    assert_eq!(jobs.len(), 2, "{file}");
    let cmds = devlab_commands(&doc);
    let suite_cmd = cmds.iter().find(|c| c.starts_with("suite ")).unwrap();
    let n = shard_n(suite_cmd, &[("${{ matrix.shard }}", "1".into())]);
    assert_eq!(matrix, (1..=n as u64).collect::<Vec<_>>(), "{file}: the matrix is not shards 1..={n}");
    assert!(cmds.iter().any(|c| c.starts_with("report merge ")), "{file}: no merge: {cmds:?}");
    check_commands(file, &cmds, n, |k| vec![("${{ matrix.shard }}", k.to_string())]);
}

#[test]
fn gitlab_parallel_matches_its_shards() {
    let file = ".gitlab-ci.yml";
    let doc = load(file);
    let parallel = doc["release-suite"]["parallel"].as_u64().unwrap_or_else(|| panic!("{file}: no parallel")) as usize;
    let cmds = devlab_commands(&doc);
    let suite_cmd = cmds.iter().find(|c| c.starts_with("suite ")).unwrap();
    assert!(suite_cmd.contains("--shard $CI_NODE_INDEX/$CI_NODE_TOTAL"), "{file}: {suite_cmd}");
    let vars = |k: usize| vec![("$CI_NODE_INDEX", k.to_string()), ("$CI_NODE_TOTAL", parallel.to_string())];
    assert_eq!(shard_n(suite_cmd, &vars(1)), parallel);
    assert!(cmds.iter().any(|c| c.starts_with("report merge ")), "{file}: no merge: {cmds:?}");
    check_commands(file, &cmds, parallel, vars);
}

/// The part of batch/v1 Job that the shipped file uses, strictly: a
/// misspelt or misplaced field is an error, as the API server's
/// validation would make it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Job {
    api_version: String,
    kind: String,
    metadata: Metadata,
    spec: JobSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Metadata {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct JobSpec {
    completion_mode: String,
    completions: u32,
    parallelism: u32,
    backoff_limit: Option<u32>,
    template: PodTemplate,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PodTemplate {
    spec: PodSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PodSpec {
    restart_policy: String,
    containers: Vec<Container>,
    #[serde(default)]
    volumes: Vec<Volume>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Container {
    name: String,
    image: String,
    #[serde(default)]
    command: Vec<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    resources: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(default)]
    volume_mounts: Vec<VolumeMount>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct VolumeMount {
    name: String,
    mount_path: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Volume {
    name: String,
    persistent_volume_claim: Option<Claim>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Claim {
    claim_name: String,
}

/// A DNS-1123 label, as Kubernetes requires of these names.
fn dns_label(s: &str) -> bool {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    !s.is_empty() && s.len() <= 63 && s.chars().all(ok) && !s.starts_with('-') && !s.ends_with('-')
}

/// A resource quantity such as `2`, `500m` or `4Gi`.
fn quantity(s: &str) -> bool {
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &s[digits.len()..];
    digits.parse::<f64>().is_ok() && ["", "m", "k", "M", "G", "T", "Ki", "Mi", "Gi", "Ti"].contains(&suffix)
}

#[test]
fn kubernetes_indexed_job_is_valid_and_matches_its_shards() {
    let file = "ci/k8s/release-suite-job.yaml";
    let doc = load(file);
    let job: Job = serde_yaml::from_value(doc.clone()).unwrap_or_else(|e| panic!("{file}: not a batch/v1 Job: {e}"));
    assert_eq!((job.api_version.as_str(), job.kind.as_str()), ("batch/v1", "Job"), "{file}");
    assert!(dns_label(&job.metadata.name) && job.metadata.labels.keys().all(|k| !k.is_empty()), "{file}");
    let spec = &job.spec;
    assert_eq!(spec.completion_mode, "Indexed", "{file}");
    assert!(spec.backoff_limit.is_none_or(|b| b < 1000), "{file}");
    let pod = &spec.template.spec;
    assert!(["Never", "OnFailure"].contains(&pod.restart_policy.as_str()), "{file}: a Job's pods never restart always");
    let volumes: Vec<&str> = pod.volumes.iter().map(|v| v.name.as_str()).collect();
    for v in &pod.volumes {
        assert!(
            dns_label(&v.name) && v.persistent_volume_claim.as_ref().is_some_and(|c| !c.claim_name.is_empty()),
            "{file}"
        );
    }
    for c in &pod.containers {
        assert!(dns_label(&c.name) && !c.image.is_empty(), "{file}: container {}", c.name);
        assert!(c.resources.keys().all(|k| k == "requests" || k == "limits"), "{file}: {:?}", c.resources.keys());
        assert!(c.resources.values().flatten().all(|(_, q)| quantity(q)), "{file}: {:?}", c.resources);
        for m in &c.volume_mounts {
            assert!(volumes.contains(&m.name.as_str()) && m.mount_path.starts_with('/'), "{file}: mount {}", m.name);
        }
        assert!(c.command.len() + c.args.len() > 0, "{file}: container {} runs its image's entrypoint", c.name);
    }
    let cmds = devlab_commands(&doc);
    let vars = |k: usize| {
        vec![("$((JOB_COMPLETION_INDEX + 1))", k.to_string()), ("$JOB_COMPLETION_INDEX", (k - 1).to_string())]
    };
    let n = shard_n(&cmds[0], &vars(1));
    assert_eq!((spec.completions as usize, spec.parallelism as usize), (n, n), "{file}: completions, parallelism, N");
    check_commands(file, &cmds, n, vars);
}

#[test]
fn durations_file_is_a_summary_of_the_release_suite() {
    // Every run of the suite has a time (none is left to the modulo rule).
    let (ok, out, err) =
        devlab(&["suite", "release", "--list", "--shard", "1/1", "--durations", "ci/durations.json"].map(String::from));
    assert!(ok, "{err}");
    let unknown: Vec<&str> = out.lines().filter(|l| l.ends_with("\t-")).collect();
    assert!(unknown.is_empty(), "ci/durations.json has no time for {unknown:?}");
    assert!(err.contains("unknown_runs=0"), "{err}");
}

#[test]
fn the_command_finder_finds_what_it_should() {
    let doc: Value = serde_yaml::from_str(
        "a: [\". env && cargo run --release -p harness -- suite x --shard 1/2\", \"chmod +x bin/devlab\"]\nb: {c: \"bin/devlab report merge r/* --out m; echo devlab\"}",
    )
    .unwrap();
    assert_eq!(devlab_commands(&doc), ["suite x --shard 1/2", "report merge r/* --out m"]);
    assert_eq!(shard_n("suite x --shard $I/7", &[("$I", "3".into())]), 7);
    assert!(quantity("4Gi") && quantity("500m") && quantity("2") && !quantity("4GB") && !quantity("two"));
    assert!(dns_label("devlab-release") && !dns_label("Devlab") && !dns_label("-x"));
}

#[test]
fn a_durations_file_that_cannot_be_read_is_bad_input_naming_it() {
    let d = tempfile::tempdir().unwrap();
    let bad = d.path().join("bad.json");
    std::fs::write(&bad, "{\"runs\": 3}").unwrap();
    let missing = d.path().join("missing.json");
    for (file, says) in [(&missing, "cannot read the durations file"), (&bad, "not a devlab summary.json")] {
        let out = Command::new(env!("CARGO_BIN_EXE_devlab"))
            .args(["suite", "release", "--list", "--shard", "1/4", "--durations"])
            .arg(file)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(&format!("{}", file.display())) && err.contains(says), "{err}");
    }
    // --durations balances shards: without --shard it is a usage error.
    let out = Command::new(env!("CARGO_BIN_EXE_devlab"))
        .args(["suite", "release", "--list", "--durations", "ci/durations.json"])
        .current_dir(root())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--shard"));
}
